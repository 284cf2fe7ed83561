"""Shared test set-up: one thread (tiny models; avoids OpenMP spin under load), small runs."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from nopeek import CutHook, TrainConfig

torch.set_num_threads(1)

# The slow tier: real processes, whole runs, sweeps, notebooks, browsers. `make test` runs every
# test; `make test-fast` (`pytest -m "not slow"`) leaves these files out.
SLOW_FILES = {
    "attacks/test_audit.py",
    "attacks/test_fora.py",
    "attacks/test_fsha.py",
    "attacks/test_public_defense.py",
    "attacks/test_grn.py",
    "attacks/test_reconstruction.py",
    "attacks/test_sdar.py",
    "attacks/test_search.py",
    "defenses/test_defense_cli.py",
    "eval/test_benchmark.py",
    "eval/test_card_search.py",
    "eval/test_certify.py",
    "eval/test_cli_eval.py",
    "eval/test_compress_sweep.py",
    "eval/test_notebooks.py",
    "eval/test_report.py",
    "eval/test_report_browser.py",
    "eval/test_sweep.py",
    "eval/test_sweep_kill.py",
    "nopeek/test_api_hooks.py",
    "nopeek/test_assemble.py",
    "nopeek/test_compress_distributed.py",
    "nopeek/test_distributed.py",
    "nopeek/test_distributed_faults.py",
    "nopeek/test_fs_faults.py",
    "nopeek/test_grpc.py",
    "nopeek/test_kill_resume.py",
    "nopeek/test_messages.py",
    "nopeek/test_own_data.py",
    "nopeek/test_party_data.py",
    "nopeek/test_process_faults.py",
    "test_plugins.py",
    "test_readme.py",
}


def pytest_collection_modifyitems(config, items):
    """Mark every test of :data:`SLOW_FILES` ``slow``."""
    root = Path(__file__).parent
    for item in items:
        if item.path.relative_to(root).as_posix() in SLOW_FILES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def tiny_config():
    """A digits run that trains in a couple of seconds."""

    def make(**overrides) -> TrainConfig:
        base = dict(dataset="digits", epochs=2, batch_size=64, seed=0, dcor_samples=200)
        return TrainConfig(**(base | overrides))

    return make


class _Interrupt(CutHook):
    """Simulates a crash: raises KeyboardInterrupt at the first training step of epoch ``at``
    (``None``: never), for a run of ``steps`` steps per epoch (17 for digits at batch 64)."""

    def __init__(self, at, steps=17):
        self.at, self.steps, self.calls = at, steps, 0

    def forward(self, cut, z, *, training):
        if training and self.at is not None:
            self.calls += 1
            if self.calls > self.at * self.steps:
                raise KeyboardInterrupt
        return z


@pytest.fixture
def interrupt():
    """The crash-simulating hook class, for resume tests."""
    return _Interrupt


#: Seconds one child process may run (a hang fails the test instead of hanging CI).
CHILD_TIMEOUT = 240


def _wait_for_files(proc, root: Path, pattern: str, count: int, deadline: float) -> None:
    """Poll until ``count`` new files matching ``root.glob(pattern)`` have appeared (a file that
    is replaced atomically is a new inode: it counts again), or ``proc`` has ended."""
    seen: dict[Path, int] = {}
    events = 0
    while events < count and proc.poll() is None:
        if time.monotonic() > deadline:
            pytest.fail(f"{proc.args} made no {count} files {root}/{pattern} in time")
        for path in root.glob(pattern):
            try:
                inode = path.stat().st_ino
            except FileNotFoundError:  # replaced or removed meanwhile
                continue
            if seen.get(path) != inode:
                seen[path] = inode
                events += 1
        time.sleep(0.002)


def _kill_child(argv, *, root, pattern: str, count: int, delay: float = 0.0):
    """Run ``python -m nopeek.cli.main *argv`` in a child process and SIGKILL it ``delay``
    seconds after the ``count``-th new file matching ``root.glob(pattern)`` appeared.

    Returns ``(exit status, stderr)``: ``-SIGKILL`` if the kill came first, else the status
    it ended with by itself. One thread per child (``OMP_NUM_THREADS=1``), as in the tests.
    """
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    deadline = time.monotonic() + CHILD_TIMEOUT
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nopeek.cli.main", *map(str, argv)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            _wait_for_files(proc, Path(root), pattern, count, deadline)
            if proc.poll() is None:
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
            status = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        return status, err.read()


@pytest.fixture(scope="session")
def kill_child():
    """``kill_child(argv, root=, pattern=, count=, delay=)``: a real ``nopeek`` process killed
    with SIGKILL right after it wrote its ``count``-th file ``root/pattern`` (plus ``delay``
    seconds); returns ``(exit status, stderr)``."""
    return _kill_child
