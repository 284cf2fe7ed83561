"""nopeek.rundir, the writing side: markers, up-front checks, fresh/resume/overwrite, staging
swaps, leftovers and file-system faults. Reading a finished folder back is in
``test_rundir_reading.py``."""

import errno
import json
import os

import pytest
import torch

from nopeek.errors import ConfigError, OutputError
from nopeek.io import atomic_torch_save, atomic_write_bytes, describe_os_error
from nopeek.rundir import MARKER, RunDir, check_out, clean_stale, kind_of, staged_entries


def _tree(root):
    """Every file under ``root`` (hidden ones included) with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _siblings(path):
    """Hidden staging/set-aside folders left beside ``path``."""
    return [p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.nopeek-")]


def _finished_run(path, text="old"):
    with RunDir(path, "run").writing() as where:
        (where / "metrics.json").write_text(text)
    return _tree(path)


# ---------------------------------------------------------------- recognising


def test_the_marker_says_which_kind_of_folder_nopeek_wrote(tmp_path):
    _finished_run(tmp_path / "run")
    marker = json.loads((tmp_path / "run" / MARKER).read_text())
    assert marker["kind"] == "run" and marker["format"] == 1 and marker["version"]
    assert kind_of(tmp_path / "run") == "run"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    assert kind_of(tmp_path / "mine") is None
    (tmp_path / "mine" / MARKER).write_text("{not json")
    assert kind_of(tmp_path / "mine") is None  # a broken marker is not a licence to delete
    assert kind_of(tmp_path / "missing") is None


def test_folders_from_before_markers_are_recognised_by_their_layout(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    keys = ("dataset", "model", "cut", "epochs", "alpha", "seed")
    (run / "config.json").write_text(json.dumps(dict.fromkeys(keys, 1)))
    assert kind_of(run) is None  # a config alone is not enough
    (run / "checkpoint.pt").write_bytes(b"x")
    assert kind_of(run) == "run"
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(
        json.dumps(dict.fromkeys(("base", "settings", "seeds", "attacks")))
    )
    assert kind_of(sweep) == "sweep"
    report = tmp_path / "report"
    (report / "sweeps").mkdir(parents=True)
    (report / "sweeps" / "digits").symlink_to(sweep)  # a link is never a nopeek sweep
    assert kind_of(report) is None
    (report / "sweeps" / "digits").unlink()
    (report / "sweeps" / "digits").mkdir()
    (report / "sweeps" / "digits" / MARKER).write_text('{"kind": "sweep"}')
    assert kind_of(report) == "report"  # a `make run` killed before its first report
    (report / "notes.txt").write_text("x")
    assert kind_of(report) is None


# ---------------------------------------------------------------- up-front checks


def test_a_file_a_link_and_a_path_under_a_file_are_refused(tmp_path):
    (tmp_path / "file").write_text("keep")
    with pytest.raises(OutputError, match=r"--out .*file is a file, not a folder; choose another"):
        check_out(tmp_path / "file")
    with pytest.raises(OutputError, match=r"file is a file, not a folder"):
        check_out(tmp_path / "file" / "run")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OutputError, match=f"symbolic link to {tmp_path / 'real'}; .*pass --out"):
        check_out(tmp_path / "link")
    assert (tmp_path / "file").read_text() == "keep"


def test_an_unwritable_folder_or_parent_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("os.access", lambda path, mode: False)
    with pytest.raises(OutputError, match=r"new/run is not writable \(its parent .* is not\)"):
        check_out(tmp_path / "new" / "run")
    with pytest.raises(OutputError, match=r"is not writable; choose another --out"):
        RunDir(tmp_path, "run").plan()
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_a_read_only_folder_is_refused(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(OutputError, match="not writable"):
        check_out(tmp_path / "ro" / "run")


def test_overwrite_replaces_only_a_folder_of_the_same_kind(tmp_path, monkeypatch):
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    before = _tree(mine)
    with pytest.raises(OutputError, match="is not a nopeek run folder .*choose another --out"):
        RunDir(mine, "run").plan(overwrite=True)
    with pytest.raises(OutputError, match="not a nopeek sweep folder"):
        RunDir(mine, "sweep").plan(reuse=True)
    assert _tree(mine) == before
    _finished_run(tmp_path / "run")
    with pytest.raises(OutputError, match="is a nopeek run folder, not a sweep folder"):
        RunDir(tmp_path / "run", "sweep").plan(overwrite=True)
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        RunDir(tmp_path / "run", "run").plan()
    monkeypatch.chdir(tmp_path / "run")
    with pytest.raises(OutputError, match="holds the current directory"):
        RunDir(".", "run").plan(overwrite=True)


# ---------------------------------------------------------------- fresh


def test_a_failed_fresh_write_leaves_nothing_and_an_interrupt_keeps_it(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    with pytest.raises(ConfigError), RunDir(out, "run").writing() as where:
        (where / "config.json").write_text("{}")
        raise ConfigError("diverged")
    assert list(tmp_path.iterdir()) == []  # the parents it created went too
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError), RunDir(tmp_path / "empty", "run").writing() as where:
        (where / "config.json").write_text("{}")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert list((tmp_path / "empty").iterdir()) == []  # emptied again, not removed
    with pytest.raises(KeyboardInterrupt), RunDir(out, "run").writing() as where:
        (where / "checkpoint.pt").write_text("epoch 1")
        raise KeyboardInterrupt
    assert (out / "checkpoint.pt").read_text() == "epoch 1"  # kept for --resume


def test_a_fresh_folder_that_holds_finished_work_is_kept(tmp_path):
    out = tmp_path / "sweep"
    with pytest.raises(ConfigError), RunDir(out, "sweep").writing(keep=lambda p: True) as where:
        (where / "done").write_text("x")
        raise ConfigError("later run failed")
    assert (out / "done").is_file()


def test_one_writer_at_a_time_the_second_is_refused_naming_the_first(tmp_path):
    """The lock is held from before the plan until the folder is complete; a second writer of
    the same folder (overwrite or fresh) is refused naming the holder's pid, and the lock file
    goes with the holder. Two real processes: tests/nopeek/test_process_faults.py."""
    out = tmp_path / "runs" / "run"
    _finished_run(out)
    lock = out.parent / ".run.nopeek-lock"
    busy = rf"^--out {out} is being written by another nopeek process \(pid {os.getpid()}\)"
    with RunDir(out, "run").writing(overwrite=True) as where:
        (where / "metrics.json").write_text("first")
        assert lock.read_text() == f"{os.getpid()}\n"
        for mode in ({"overwrite": True}, {"resume": True}):
            with pytest.raises(OutputError, match=busy), RunDir(out, "run").writing(**mode):
                pass
        other = RunDir(tmp_path / "runs" / "other", "run")
        with other.writing() as beside:  # another folder of the same parent: its own lock
            (beside / "metrics.json").write_text("x")
    assert (out / "metrics.json").read_text() == "first"
    assert sorted(p.name for p in out.parent.iterdir()) == ["other", "run"]  # no lock left
    lock.write_text("12345\n")  # what a killed writer leaves: the kernel released its lock
    _finished_run(tmp_path / "runs" / "x")
    with RunDir(out, "run").writing(overwrite=True) as where:
        (where / "metrics.json").write_text("second")
    assert (out / "metrics.json").read_text() == "second" and not lock.exists()


# ---------------------------------------------------------------- overwrite


def test_overwrite_swaps_in_the_new_folder_only_when_it_is_complete(tmp_path):
    out = tmp_path / "run"
    _finished_run(out)
    with RunDir(out, "run").writing(overwrite=True) as where:
        assert where != out and where.parent == out.parent.resolve()
        (where / "metrics.json").write_text("new")
        assert (out / "metrics.json").read_text() == "old"  # still the old run meanwhile
    assert (out / "metrics.json").read_text() == "new" and kind_of(out) == "run"
    assert _siblings(out) == []


@pytest.mark.parametrize("fault", [ConfigError("diverged"), KeyboardInterrupt()])
def test_a_failed_overwrite_keeps_the_old_folder_byte_for_byte(fault, tmp_path):
    out = tmp_path / "run"
    before = _finished_run(out)
    with pytest.raises(type(fault)), RunDir(out, "run").writing(overwrite=True) as where:
        (where / "metrics.json").write_text("half")
        raise fault
    assert _tree(out) == before
    assert _siblings(out) == []


def test_a_failing_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    out = tmp_path / "run"
    before = _finished_run(out)
    rename = os.rename

    def cross_device(src, dst):
        if "nopeek-staging" in str(src):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return rename(src, dst)

    monkeypatch.setattr("os.rename", cross_device)
    with (
        pytest.raises(OutputError, match="cannot replace .*run: Invalid cross-device link"),
        RunDir(out, "run").writing(overwrite=True) as where,
    ):
        (where / "metrics.json").write_text("new")
    assert _tree(out) == before and _siblings(out) == []


def test_leftovers_of_a_killed_overwrite_are_settled_on_the_next_attempt(tmp_path):
    out = tmp_path / "run"
    before = _finished_run(out)
    stale = tmp_path / ".run.nopeek-staging-abcd1234"  # killed while training the new run
    stale.mkdir()
    (stale / "checkpoint.pt").write_text("half")
    RunDir(out, "run").plan(overwrite=True)
    assert not stale.exists() and _tree(out) == before
    out.rename(tmp_path / ".run.nopeek-old-0123abcd")  # killed between the swap's two renames
    assert RunDir(out, "run").plan(overwrite=True) == "overwrite"
    assert _tree(out) == before and _siblings(out) == []


# ---------------------------------------------------------------- stale temporaries


def test_resume_removes_stale_temporaries_of_atomic_writes(tmp_path):
    out = tmp_path / "run"
    _finished_run(out)
    (out / ".checkpoint.pt.k3x_9a0q.tmp").write_bytes(b"half a checkpoint")
    (out / "attacks").mkdir()
    (out / "attacks" / ".white-box.json.abcdefgh.tmp").write_text("{")
    (out / "attacks" / "notes.tmp").write_text("not ours")
    with RunDir(out, "run").writing(resume=True) as where:
        assert where == out
    names = {p.name for p in out.rglob("*")}
    assert (
        ".checkpoint.pt.k3x_9a0q.tmp" not in names and ".white-box.json.abcdefgh.tmp" not in names
    )
    assert {"notes.tmp", "metrics.json", MARKER} <= names
    assert clean_stale(out) == []


# ---------------------------------------------------------------- staged entries


def test_staged_entries_replace_only_the_named_entries(tmp_path):
    folder = tmp_path / "report"
    (folder / "sweeps" / "s").mkdir(parents=True)
    (folder / "sweeps" / "s" / "results.csv").write_text("precious")
    (folder / "report.md").write_text("old")
    (folder / "figures").mkdir()
    (folder / "figures" / "old.png").write_bytes(b"old")
    names = ("figures", "report.md")
    with pytest.raises(ConfigError), staged_entries(folder, names) as staging:
        (staging / "report.md").write_text("half")
        raise ConfigError("plot failed")
    assert (folder / "report.md").read_text() == "old"
    with staged_entries(folder, names) as staging:
        (staging / "figures").mkdir()
        (staging / "figures" / "new.png").write_bytes(b"new")
        (staging / "report.md").write_text("new")
    assert (folder / "report.md").read_text() == "new"
    assert [p.name for p in (folder / "figures").iterdir()] == ["new.png"]
    assert (folder / "sweeps" / "s" / "results.csv").read_text() == "precious"
    assert sorted(p.name for p in folder.iterdir()) == ["figures", "report.md", "sweeps"]


# ---------------------------------------------------------------- file-system faults in _io


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    monkeypatch.setattr("nopeek.io.os.fsync", _full_disk)
    with pytest.raises(OutputError, match=r"cannot write .*x\.json: no space left .*free space"):
        atomic_write_bytes(tmp_path / "x.json", b"{}")
    assert list(tmp_path.iterdir()) == []


def test_a_failing_write_inside_torch_save_is_reported_as_itself(tmp_path, monkeypatch):
    real = os.fdopen

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr("nopeek.io.os.fdopen", lambda fd, mode: Full(real(fd, mode)))
    with pytest.raises(OutputError, match=r"checkpoint\.pt: file too large .*ulimit -f"):
        atomic_torch_save({"w": torch.zeros(1000)}, tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "code, fix",
    [
        (errno.ENOSPC, "free space"),
        (errno.EFBIG, "ulimit -f"),
        (errno.EACCES, "permissions"),
        (errno.EROFS, "read-only file system"),
        (errno.EIO, "Input/output error; check the path"),
    ],
)
def test_os_errors_are_described_in_one_line_with_a_fix(code, fix):
    text = describe_os_error(OSError(code, os.strerror(code), "runs/a\nb"))
    assert fix in text and "\n" not in text and text.startswith("runs/a b: ")


def test_held_keeps_the_lock_from_the_plan_to_the_last_byte(tmp_path):
    """`train` holds the folder across plan() and writing(): between the two no other writer
    can plan or write it (it used to be free there, so two overwrites could both succeed)."""
    out = tmp_path / "runs" / "run"
    _finished_run(out)
    lock = out.parent / ".run.nopeek-lock"
    folder = RunDir(out, "run")
    with folder.held():
        assert folder.plan(overwrite=True) == "overwrite"
        assert lock.read_text() == f"{os.getpid()}\n"  # still held after the plan
        with pytest.raises(OutputError, match="is being written by another nopeek process"):
            RunDir(out, "run").plan(overwrite=True)
        with folder.writing(overwrite=True) as where:  # its own lock: no second acquisition
            (where / "metrics.json").write_text("held")
        assert lock.exists()
    assert (out / "metrics.json").read_text() == "held" and not lock.exists()
