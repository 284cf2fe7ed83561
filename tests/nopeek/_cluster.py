"""The processes of ``test_distributed.py``: the driver that runs one party of many runs in
turn, the sender of the receiver test, the children, and the cluster's waits and signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch.distributed as dist

WAIT = 300  # seconds any child may run before the test fails (and kills it)


# One party of many runs in turn: argv[1] is a JSON list of jobs: {"argv", "log", "err"} (a
# `nopeek` command line, where its result goes, where its stderr goes), {"exec", "args", "log",
# "err"} (Python code run with ARGS) or {"wait_for": path, "timeout"}. A job's result: exit
# status, seconds, when it ended, and every tensor handed to dist.isend (dtype, bytes, whether
# it is a nopeek header). torch.distributed's pickling calls raise.
DRIVER = """
import json, os, sys, time, traceback
import torch, torch.distributed as dist, torch.distributed.distributed_c10d as c10d
def _no_pickles(*args, **kwargs):
    raise AssertionError("a pickled object was about to cross the wire")
for mod in (dist, c10d):
    for name in ("send_object_list", "recv_object_list", "broadcast_object_list",
                 "all_gather_object", "gather_object", "scatter_object_list"):
        setattr(mod, name, _no_pickles)
from nopeek.cli.main import main
from nopeek.runtime import wire
sent, real_isend = [], dist.isend
def isend(tensor, dst, *args, **kwargs):
    head = (tensor.dtype == torch.int64 and tensor.numel() == wire.HEADER_LEN
            and int(tensor[0]) == wire.MAGIC)
    sent.append([str(tensor.dtype), tensor.numel() * tensor.element_size(), bool(head)])
    return real_isend(tensor, dst, *args, **kwargs)
dist.isend = isend
def run(job):
    if "argv" in job:
        return main(job["argv"])
    exec(compile(job["exec"], "<job>", "exec"), {"ARGS": job["args"]})
    return 0
for job in json.loads(sys.argv[1]):
    if "wait_for" in job:
        deadline = time.monotonic() + job["timeout"]
        while not os.path.exists(job["wait_for"]) and time.monotonic() < deadline:
            time.sleep(0.02)
        continue
    sent.clear()
    if not dist.is_initialized():  # a join that failed leaves its group count behind: a fresh
        c10d._world.group_count = 0  # process (which each job stands for) starts from 0
    sys.stderr.flush()
    saved, err = os.dup(2), os.open(job["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(err, 2)
    began = time.monotonic()
    try:
        code = run(job)
    except BaseException:
        traceback.print_exc()
        code = 1
    seconds = time.monotonic() - began
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(err)
    os.close(saved)
    result = {"code": code, "seconds": seconds, "ended": time.time(), "sent": sent}
    open(job["log"] + ".tmp", "w").write(json.dumps(result))
    os.replace(job["log"] + ".tmp", job["log"])
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Child:
    """A child process (``python *args``, one thread) with its stderr in a file."""

    def __init__(self, args: list, folder: Path, name: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.name, self.err_path = name, folder / f"{name}.err"
        with open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, *map(str, args)],
                env=os.environ | {"OMP_NUM_THREADS": "1"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def wait(self, timeout: float = WAIT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} did not end within {timeout:g} s; stderr:\n{self.err}")

    def ok(self) -> None:
        assert self.wait() == 0, f"{self.name} failed:\n{self.err}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# The sender of the receiver test (a job of driver 2; the receiver is this process): a valid
# activation and stats text through a channel, then hand-made headers alone (ARGS[1]), then an
# error message; it writes its byte counters to ARGS[2] and stays until the receiver gave up.
SENDER = """
import datetime, json, torch, torch.distributed as dist
from nopeek.runtime.channel import Message
from nopeek.runtime.distributed import TorchDistributedChannel
port, headers, out = ARGS
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=2,
                        timeout=datetime.timedelta(seconds=600))
try:
    ch = TorchDistributedChannel(me="client", ranks={"client": 0, "server": 1}, cuts=["conv2"],
                                 expect=lambda kind, cut, sender: ((16, 4, 4), None),
                                 max_batch=64, timeout=60)
    z = torch.arange(4 * 16 * 16, dtype=torch.float32).reshape(4, 16, 4, 4)
    ch.post(Message("activation", "conv2", "client", "server", 0, z, torch.tensor([7, 1, 5, 3])))
    ch.send_text("stats", "server", json.dumps({"steps": [[0, 4, [0.5]]]}))
    counts = [ch.header_bytes, ch.payload_bytes]
    for values in headers:
        dist.isend(torch.tensor(values, dtype=torch.int64), dst=1).wait()
    ch.send_text("error", "server", "client: boom")  # what broadcast_error sends
    counts += [ch.header_bytes, ch.payload_bytes]
    open(out, "w").write(json.dumps(counts))
    try:  # stay until the receiver gave up waiting (gloo then closes the pair)
        dist.irecv(torch.zeros(1), src=1).wait(timeout=datetime.timedelta(seconds=60))
    except RuntimeError:
        pass
finally:
    dist.destroy_process_group()
"""


class _Cluster:
    """The runs' folders (``root / <run> / <party>``), the in-process references (``root /
    <run>.ref``) and each job's result."""

    def __init__(self, root: Path) -> None:
        self.root, self.logs = root, root / "logs"
        self.signalled: dict[str, float] = {}  # case -> when its client was killed / stopped
        self.drivers: list[_Child] = []
        self.torchrun: _Child | None = None
        self.sender_port = _port()

    def job(self, name: str, rank: int) -> dict:
        """Exit status, seconds, when it ended (``time.time()``), what it sent, its stderr."""
        result = json.loads((self.logs / f"{name}.{rank}.json").read_text())
        return result | {"err": (self.logs / f"{name}.{rank}.err").read_text()}

    def ok(self, name: str, world: int) -> None:
        for rank in range(world):
            job = self.job(name, rank)
            assert job["code"] == 0, f"{name} rank {rank} failed:\n{job['err']}"


class _Plan:
    """What each of three drivers runs, in order: ``nopeek party`` jobs, waits and code."""

    def __init__(self, cluster: _Cluster, flags: list[str]) -> None:
        self.c, self.flags = cluster, flags
        self.ports: dict[str, int] = {}
        self.jobs: list[list[dict]] = [[], [], []]

    def job(self, driver: int, name: str, rank: int, world: int, *extra, timeout=120) -> None:
        """Rank ``rank`` of run ``name`` (its own port, ``root/name``) on ``driver``."""
        port = self.ports.setdefault(name, _port())
        argv = ["party", "--rank", rank, "--world-size", world, "--master-port", port]
        argv += ["--out", self.c.root / name, "--timeout", timeout, *self.flags, *extra]
        log = self.c.logs / f"{name}.{rank}"
        entry = {"argv": list(map(str, argv)), "log": f"{log}.json", "err": f"{log}.err"}
        self.jobs[driver].append(entry)

    def wait_for(self, driver: int, name: str, rank: int) -> None:
        path = str(self.c.logs / f"{name}.{rank}.json")
        self.jobs[driver].append({"wait_for": path, "timeout": WAIT})

    def start(self, children: list[_Child]) -> None:
        """Start the drivers, and ``torchrun`` with two ranks of the plain run."""
        c = self.c
        for d, mine in enumerate(self.jobs):
            c.drivers.append(_Child(["-c", DRIVER, json.dumps(mine)], c.logs, f"driver{d}"))
            children.append(c.drivers[-1])
        if dist.is_available() and dist.is_gloo_available():
            args = ["-m", "torch.distributed.run", "--nproc-per-node", 2, "--master-port"]
            args += [_port(), "-m", "nopeek.cli.party", "--out", c.root / "torchrun"]
            c.torchrun = _Child([*args, "--timeout", 120, *self.flags], c.logs, "torchrun")
            children.append(c.torchrun)


def _back_to_epoch_one(party_dir: Path) -> None:
    """What a party killed after its first epoch has: the epoch-1 checkpoint only."""
    for name in ("metrics.json", "observations.pt", "checkpoint.pt"):
        (party_dir / name).unlink(missing_ok=True)
    (party_dir / "checkpoint.prev.pt").rename(party_dir / "checkpoint.pt")


def _resume_state(root: Path) -> None:
    """From the finished vanilla run: both parties back at epoch 1 (resume-both); the client
    finished (epoch 2, and epoch 1 kept) but the server back at epoch 1 (resume-skew)."""
    for run in ("resume-both", "resume-skew", "resume-vs-overwrite"):
        shutil.copytree(root / "vanilla", root / run)
        _back_to_epoch_one(root / run / "server")
    _back_to_epoch_one(root / "resume-both" / "client")


# case -> (the driver whose last job is its client, the signal once that wrote a checkpoint)
SIGNALLED = {"killed": (1, signal.SIGKILL), "stalled": (0, signal.SIGSTOP)}


def _watch(cluster: _Cluster, stop: threading.Event) -> None:
    """SIGKILL / SIGSTOP the driver running a client right after its first checkpoint; the
    stopped one is killed once its server gave up."""
    todo = dict(SIGNALLED)
    deadline = time.monotonic() + WAIT
    while not stop.is_set() and time.monotonic() < deadline:
        for case, (driver, sig) in list(todo.items()):
            if (cluster.root / case / "client" / "checkpoint.pt").is_file():
                cluster.drivers[driver].proc.send_signal(sig)
                cluster.signalled[case] = time.time()
                del todo[case]
        if "stalled" in cluster.signalled and (cluster.logs / "stalled.1.json").is_file():
            cluster.drivers[SIGNALLED["stalled"][0]].kill()
            if not todo:
                return
        time.sleep(0.01)


def _wait_for(cluster: _Cluster, paths: list[Path]) -> None:
    """Until every file in ``paths`` exists; fails if a driver ended unasked or time is up."""
    deadline = time.monotonic() + WAIT
    while not all(p.is_file() for p in paths):
        signalled = {SIGNALLED[case][0] for case in cluster.signalled}
        for i, driver in enumerate(cluster.drivers):
            if i not in signalled and driver.proc.poll() is not None:
                missing = [p.name for p in paths if not p.is_file()]
                pytest.fail(f"driver{i} ended before writing {missing}:\n{driver.err}")
        assert time.monotonic() < deadline, f"no {paths} within {WAIT} s"
        time.sleep(0.02)
