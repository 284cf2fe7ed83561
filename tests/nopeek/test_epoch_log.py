"""What a run reports while it trains: metrics.csv, TensorBoard scalars, progress lines."""

import csv
import json
import sys
from types import SimpleNamespace

import pytest

import nopeek.rundir.checkpoint as checkpoint
from nopeek import train
from nopeek.cli.main import main
from nopeek.training.epoch_log import MetricsCsv
from nopeek.training.runner import Runner

CURVES = {"train_loss": "train_loss_per_epoch", "test_accuracy": "test_accuracy_per_epoch"}


def _rows(run):
    """metrics.csv as (header, rows of numbers)."""
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], [[float(v) for v in row] for row in rows[1:]]


def _curves(run):
    """metrics.json's per-epoch curves as metrics.csv's rows."""
    m = json.loads((run / "metrics.json").read_text())
    n = len(m["train_loss_per_epoch"])
    return [[i + 1, *(m[key][i] for key in CURVES.values())] for i in range(n)]


def test_metrics_csv_rows_equal_the_per_epoch_curves(tiny_config, tmp_path):
    train(tiny_config(epochs=3), tmp_path / "run", quiet=True)
    header, rows = _rows(tmp_path / "run")
    assert header == ["epoch", *CURVES]
    assert rows == _curves(tmp_path / "run")  # bit for bit: floats are written as repr
    assert len(rows) == 3


def test_resume_drops_the_rows_after_the_checkpoint(tiny_config, tmp_path, monkeypatch):
    cfg = tiny_config(epochs=4)
    train(cfg, tmp_path / "full", quiet=True)
    save = checkpoint.save

    def crash_before_checkpoint_3(out, runner, epochs_done, **kw):
        if epochs_done == 3:  # the row of epoch 3 is written, its checkpoint is not
            raise KeyboardInterrupt
        save(out, runner, epochs_done, **kw)

    monkeypatch.setattr(checkpoint, "save", crash_before_checkpoint_3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", quiet=True)
    monkeypatch.setattr(checkpoint, "save", save)
    run = tmp_path / "cut"
    assert [r[0] for r in _rows(run)[1]] == [1, 2, 3]
    with open(run / "metrics.csv", "a") as fh:  # and a torn line, as from a foreign writer
        fh.write("4,0.12")
    train(cfg, run, resume=True, quiet=True)
    assert _rows(run) == _rows(tmp_path / "full")  # resume is exact: so are the rows
    assert _rows(run)[1] == _curves(run)


def test_a_row_is_appended_whole(tmp_path):
    log = MetricsCsv(tmp_path / "m.csv", ["train_loss"])
    log.restart([])
    log.append({"epoch": 1, "train_loss": 0.1 + 0.2})
    log.append({"epoch": 2, "train_loss": float("nan")})
    assert (tmp_path / "m.csv").read_text() == "epoch,train_loss\n1,0.30000000000000004\n2,nan\n"
    log.restart([{"epoch": 1, "train_loss": 0.5}])  # a resume at epoch 1
    assert (tmp_path / "m.csv").read_text() == "epoch,train_loss\n1,0.5\n"


def test_only_the_process_writing_metrics_json_writes_the_csv():
    label = SimpleNamespace(distributed=True, label_party="server", parties={"server": 0})
    client = SimpleNamespace(distributed=True, label_party="server", parties={"client": 0})
    alone = SimpleNamespace(distributed=False, label_party="server", parties={"client": 0})
    assert Runner.writes_metrics.fget(label) and Runner.writes_metrics.fget(alone)
    assert not Runner.writes_metrics.fget(client)


def test_tensorboard_gets_the_scalars(tiny_config, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(tiny_config(epochs=3), tmp_path / "run", quiet=True, tensorboard=tmp_path / "tb")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert set(CURVES) <= set(events.Tags()["scalars"])
    for tag, key in CURVES.items():
        got = events.Scalars(tag)
        assert [e.step for e in got] == [1, 2, 3]
        want = result.metrics[key]
        assert [e.value for e in got] == pytest.approx(want, rel=1e-6)  # stored as float32


def test_tensorboard_without_the_extra_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    out = tmp_path / "run"
    argv = ["train", "--epochs", "1", "--out", str(out), "--tensorboard", str(tmp_path / "tb")]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "pip install 'nopeek[tensorboard]'" in err
    assert not out.exists() and not (tmp_path / "tb").exists()


def test_progress_without_a_terminal_is_one_line_per_epoch(tiny_config, capsys):
    train(tiny_config(epochs=3), quiet=False)  # capsys: stderr is no terminal
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    for line in lines:
        assert "train_loss " in line and "test_accuracy " in line
    assert "\r" not in err  # no progress bar
    train(tiny_config(epochs=2), quiet=True)
    assert "epoch " not in capsys.readouterr().err


def test_progress_on_a_terminal_is_a_bar(tiny_config, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    train(tiny_config(epochs=2), quiet=False)
    err = capsys.readouterr().err
    assert "train" in err and "step" in err  # tqdm's bar
    assert not any(line.startswith("epoch 1/2") for line in err.splitlines())
