"""Fault injection on the folders nopeek writes, through the real CLI (and the API).

The promises: a user's files are never deleted; a failed ``--overwrite`` leaves the old run or
sweep or report byte for byte; ``--out`` that is a file, a link, unwritable, or on a full disk
gives one line and exit 2, and leaves nothing behind; leftovers of a kill are cleaned up.
"""

import errno
import json
import os
import subprocess
import sys

import pytest

from nopeek import CutHook, TrainConfig, train
from nopeek.cli.main import main
from nopeek.errors import ConfigError
from nopeek.eval.settings import make_settings
from nopeek.eval.sweep import SweepSpec, run_sweep

TINY = ["--dataset", "digits", "--epochs", "1", "--max-train", "100", "--quiet"]
TINY += ["--record-samples", "16", "--dcor-samples", "16"]
CONFIG = dict(dataset="digits", epochs=1, max_train=100, record_samples=16, dcor_samples=16)


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def _tree(root) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _hidden_leftovers(folder) -> list[str]:
    """Staging folders or temporaries anywhere under ``folder``."""
    return [p.name for p in folder.rglob(".*") if "nopeek-" in p.name or p.suffix == ".tmp"]


class _Fails(CutHook):
    """Raises ``error`` at the first training step (a run that fails after the folder logic)."""

    def __init__(self, error):
        self.error = error

    def forward(self, cut, z, *, training):
        if training:
            raise self.error
        return z


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run (copy it before changing it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def _copy_run(finished_run, dest):
    dest.mkdir(parents=True)
    for name, data in _tree(finished_run).items():
        (dest / name).write_bytes(data)
    return _tree(dest)


# ---------------------------------------------------------------- the user's files


def test_overwrite_refuses_a_users_folder_and_leaves_it_untouched(tmp_path, capsys):
    mine = tmp_path / "mydata"
    (mine / "raw").mkdir(parents=True)
    (mine / "raw" / "scan.png").write_bytes(b"\x89PNG data")
    (mine / "config.json").write_text('{"mine": true}')
    before = _tree(mine)
    for command in (["train", *TINY], ["sweep", *TINY, "--attack", "none"]):
        assert main([*command, "--out", str(mine), "--overwrite"]) == 2
        assert "not a nopeek" in _err(capsys)
        assert _tree(mine) == before


def test_out_dot_with_overwrite_leaves_the_working_directory_alone(tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print(1)")
    before = _tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "--out", ".", "--overwrite"]) == 2
    assert "--out . is not empty and is not a nopeek run folder" in _err(capsys)
    assert main(["report", "--out", "."]) == 2  # refused before the default sweeps train
    assert "not a nopeek report folder" in _err(capsys)
    assert _tree(tmp_path) == before


# ---------------------------------------------------------------- failed overwrites


@pytest.mark.parametrize("error", [ConfigError("loss is NaN"), KeyboardInterrupt()])
def test_a_failed_overwrite_keeps_the_old_run_byte_for_byte(error, finished_run, tmp_path):
    out = tmp_path / "run"
    before = _copy_run(finished_run, out)
    with pytest.raises(type(error)):
        train(TrainConfig(**CONFIG, seed=5), out, overwrite=True, quiet=True, hooks=[_Fails(error)])
    assert _tree(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging folder left


def test_a_successful_overwrite_replaces_the_run(finished_run, tmp_path):
    out = tmp_path / "run"
    _copy_run(finished_run, out)
    result = train(TrainConfig(**CONFIG, seed=5), out, overwrite=True, quiet=True)
    assert result.run_dir == out
    assert json.loads((out / "config.json").read_text())["seed"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_a_failed_fresh_run_leaves_nothing(tmp_path):
    out = tmp_path / "new" / "run"
    with pytest.raises(ConfigError, match="loss is NaN"):
        train(TrainConfig(**CONFIG), out, quiet=True, hooks=[_Fails(ConfigError("loss is NaN"))])
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- --out that cannot be written


@pytest.mark.parametrize(
    "command",
    [["train", *TINY], ["sweep", *TINY, "--attack", "none"], ["report"]],
    ids=["train", "sweep", "report"],
)
def test_out_that_is_a_file_or_a_link_is_refused_in_one_line(command, tmp_path, capsys):
    (tmp_path / "file").write_text("keep")
    assert main([*command, "--out", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder; choose another --out" in _err(capsys)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert main([*command, "--out", str(tmp_path / "link")]) == 2
    assert f"symbolic link to {tmp_path / 'real'}" in _err(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "link", "real"]
    assert (tmp_path / "file").read_text() == "keep" and not any((tmp_path / "real").iterdir())


def test_an_unwritable_out_is_refused_up_front(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("os.access", lambda path, mode: False)
    assert main(["train", *TINY, "--out", str(tmp_path / "run")]) == 2
    assert "is not writable" in _err(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_a_read_only_folder_is_refused(tmp_path, capsys):
    (tmp_path / "ro").mkdir(mode=0o555)
    assert main(["train", *TINY, "--out", str(tmp_path / "ro" / "run")]) == 2
    assert "not writable" in _err(capsys)


def test_a_full_disk_mid_run_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    import nopeek.io as io

    calls = []

    def fsync(fd):  # the marker and config.json fit, the first checkpoint (its captures) not
        calls.append(fd)
        if len(calls) >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", fsync)
    assert main(["train", *TINY, "--out", str(tmp_path / "run")]) == 2
    err = _err(capsys)
    assert "/run/captures/00000000-" in err  # the epoch's capture shard, written first
    assert ".pt: no space left on the device; free space or choose another" in err
    assert len(calls) == 3 and list(tmp_path.iterdir()) == []


_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
from nopeek.cli.main import main
args = sys.argv[1:]
print(main([*args, "--out", "fresh"]), main([*args, "--out", "old", "--overwrite", "--seed", "3"]))
"""


def test_a_real_file_size_limit_in_a_child_process(finished_run, tmp_path):
    """EFBIG from the kernel (a checkpoint over RLIMIT_FSIZE), as on a full disk."""
    before = _copy_run(finished_run, tmp_path / "old")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [sys.executable, "-c", _LIMITED, "train", *TINY],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.stdout.split() == ["2", "2"], proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and "Traceback" not in proc.stderr, proc.stderr
    for line in lines:
        assert line.startswith("error: cannot write ") and "file too large" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]  # nothing fresh, no staging
    assert _tree(tmp_path / "old") == before


def test_an_os_error_outside_the_writers_is_still_one_line(tmp_path, capsys, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "/data/x")

    monkeypatch.setattr(
        "nopeek.training.trainer.train", denied
    )  # imported by the handler when it runs
    assert main(["train", *TINY, "--out", str(tmp_path / "run")]) == 2
    assert "/data/x: permission denied; choose another --out" in _err(capsys)


# ---------------------------------------------------------------- leftovers of a kill


def test_resume_removes_stale_temporaries(interrupt, tmp_path):
    cfg = TrainConfig(**(CONFIG | {"epochs": 2}))  # 100 samples / batch 64: 2 steps an epoch
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, quiet=True, hooks=[interrupt(at=1, steps=2)])
    (out / ".checkpoint.pt.k3x_9a0q.tmp").write_bytes(b"half a checkpoint")  # a kill mid-write
    (out / ".observations.pt.abcdefgh.tmp").write_bytes(b"half")
    train(cfg, out, resume=True, quiet=True, hooks=[interrupt(None)])
    assert _hidden_leftovers(out) == []
    assert (out / "metrics.json").is_file()


# ---------------------------------------------------------------- sweeps


def _spec(**base) -> SweepSpec:
    config = TrainConfig(**(CONFIG | base)).resolved()
    return SweepSpec(config, make_settings([0.0]), [0], [], {})


def test_a_sweep_writes_nothing_until_everything_is_valid(tmp_path, monkeypatch):
    out = tmp_path / "s"
    bad = _spec()
    bad.attack_options = {"stepz": 3}
    with pytest.raises(ConfigError, match="unknown attack options"):
        run_sweep(bad, out, quiet=True)
    assert not out.exists()

    def broken(task):
        raise ConfigError("loss is NaN")

    monkeypatch.setattr("nopeek.eval.sweep.run_task", broken)
    with pytest.raises(ConfigError, match="loss is NaN"):
        run_sweep(_spec(), out, quiet=True)
    assert not out.exists()  # no run finished: nothing to keep, nothing to refuse a rerun
    monkeypatch.undo()
    rows = run_sweep(_spec(lr=2e-3), out, quiet=True)  # a corrected rerun with other options
    assert len(rows) == 1 and rows[0]["lr"] == 2e-3


def test_a_failed_sweep_overwrite_keeps_the_old_sweep(tmp_path, monkeypatch):
    out = tmp_path / "s"
    run_sweep(_spec(), out, quiet=True)
    before = _tree(out)

    def broken(task):
        raise KeyboardInterrupt

    monkeypatch.setattr("nopeek.eval.sweep.run_task", broken)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_spec(lr=2e-3), out, overwrite=True, quiet=True)
    assert _tree(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["s"]
    monkeypatch.undo()
    run_sweep(_spec(lr=2e-3), out, overwrite=True, quiet=True)
    assert json.loads((out / "sweep.json").read_text())["base"]["lr"] == 2e-3
    assert [p.name for p in tmp_path.iterdir()] == ["s"] and _hidden_leftovers(out) == []


# ---------------------------------------------------------------- reports


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "s"
    run_sweep(_spec(), out, quiet=True)
    return out


def test_report_refuses_a_foreign_or_other_kind_of_folder(
    sweep_dir, finished_run, tmp_path, capsys
):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "todo.txt").write_text("mine")
    assert main(["report", "--sweep", str(sweep_dir), "--out", str(mine)]) == 2
    assert "is not empty and is not a nopeek report folder" in _err(capsys)
    assert _tree(mine) == {"todo.txt": b"mine"}
    assert main(["report", "--sweep", str(sweep_dir), "--out", str(finished_run)]) == 2
    assert "is a nopeek run folder, not a report folder" in _err(capsys)


def test_report_replaces_its_own_files_and_keeps_its_sweeps(
    sweep_dir, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "rep"
    assert main(["report", "--sweep", str(sweep_dir), "--out", str(out)]) == 0
    inner = out / "sweeps" / "s"  # as `make run` keeps its default sweeps
    inner.mkdir(parents=True)
    for name, data in _tree(sweep_dir).items():
        (inner / name).parent.mkdir(parents=True, exist_ok=True)
        (inner / name).write_bytes(data)
    (out / "figures" / "stale.png").write_bytes(b"old figure")
    sweeps_before = _tree(inner)
    before = _tree(out)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("nopeek.eval.report.to_html", full)
    assert main(["report", "--sweep", str(inner), "--out", str(out)]) == 2
    assert "no space left" in _err(capsys)
    assert _tree(out) == before and _hidden_leftovers(out) == []
    monkeypatch.undo()
    assert main(["report", "--sweep", str(inner), "--out", str(out)]) == 0
    assert not (out / "figures" / "stale.png").exists()  # figures/ replaced as a whole
    assert _tree(inner) == sweeps_before and _hidden_leftovers(out) == []
    assert json.loads((out / "report.json").read_text())["sections"][0]["sweep"] == str(inner)


def test_report_rerun_reuses_its_default_sweeps_like_make_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("nopeek.eval.defaults.default_sweeps", lambda: [("tiny", _spec())])
    out = tmp_path / "latest"
    assert main(["report", "--quiet", "--out", str(out)]) == 0
    runs = out / "sweeps" / "tiny" / "runs"
    trained = {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()}
    (out / ".nopeek.json").unlink()  # a report folder from before markers is recognised too
    assert main(["report", "--quiet", "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()} == trained
    assert (out / "report.md").is_file() and _hidden_leftovers(out) == []
    capsys.readouterr()
