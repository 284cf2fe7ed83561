"""``nopeek train`` / ``nopeek models`` end to end, and every bad input: one line, exit 2."""

import json
import re
import subprocess
import sys

import pytest
import torch

from nopeek.cli.main import main

FAST = ["--epochs", "1", "--dcor-samples", "50", "--quiet"]


def _err(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    return err


def test_train_end_to_end_writes_the_documented_files(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    assert {p.name for p in out.iterdir()} == {
        ".nopeek.json",
        "config.json",
        "metrics.json",
        "metrics.csv",
        "checkpoint.pt",
        "observations.pt",
    }
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "test_accuracy",
        "dcor_test",
        "dcor_test_unbiased",
        "dcor_sample_size",
        "bytes_client_to_server",
        "bytes_server_to_client",
        "train_seconds",
        "epochs",
        "alpha",
        "seed",
        "dataset",
        "model",
        "cut",
    ):
        assert key in metrics, key
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "digits-cnn" and config["cut"] == "conv2"
    assert "test_accuracy" in capsys.readouterr().out


def test_models_lists_cuts(capsys):
    assert main(["models"]) == 0
    assert "digits-cnn" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'; choose one of"),
        (["--model", "vgg"], "unknown model 'vgg'; choose one of"),
        (["--cut", "conv7"], "unknown cut 'conv7' for this model; choose one of: conv1"),
        (["--alpha", "-1"], "alpha must be >= 0"),
        (["--epochs", "0"], "epochs must be > 0"),
        (["--batch-size", "1", "--alpha", "0.5"], "needs batches of at least 2"),
        (["--dataset", "mnist"], "mnist needs --data-root"),
        (["--dataset", "breast-cancer", "--model", "digits-cnn"], r"takes inputs of shape"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["train", *FAST, "--out", str(out), *args]) == 2
    assert re.search(message, _err(capsys))
    assert not out.exists()


def test_a_malformed_flag_is_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--epochs", "abc", "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    assert "invalid int value: 'abc'" in _err(capsys)


def test_bad_input_messages(tmp_path, capsys):
    """The message names the problem and the fix."""
    out = tmp_path / "run"
    assert main(["train", *FAST, "--out", str(out), "--alpha", "-1"]) == 2
    assert "use --alpha 0 to disable NoPeek" in _err(capsys)
    assert (
        main(
            [
                "train",
                *FAST,
                "--out",
                str(out),
                "--dataset",
                "mnist",
                "--data-root",
                str(tmp_path / "nowhere"),
            ]
        )
        == 2
    )
    assert "nowhere" in _err(capsys)
    (tmp_path / "empty").mkdir()
    assert (
        main(
            [
                "train",
                *FAST,
                "--out",
                str(out),
                "--dataset",
                "mnist",
                "--data-root",
                str(tmp_path / "empty"),
            ]
        )
        == 2
    )
    assert "empty" in _err(capsys)
    assert not out.exists()


def test_existing_run_dir_needs_overwrite_and_resume_checks_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *FAST, "--out", str(out)]) == 0
    capsys.readouterr()
    before = (out / "metrics.json").read_text()
    assert main(["train", *FAST, "--out", str(out)]) == 2
    assert "pass --overwrite" in _err(capsys)
    assert (out / "metrics.json").read_text() == before
    assert main(["train", *FAST, "--out", str(out), "--resume", "--alpha", "0.5"]) == 2
    assert "trained with alpha=0.0, not 0.5" in _err(capsys)
    assert main(["train", *FAST, "--out", str(out), "--resume"]) == 2
    assert "already finished" in _err(capsys)
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["train", *FAST, "--out", str(out), "--resume"]) == 2
    assert "corrupt" in _err(capsys)


def test_a_checkpoint_from_another_model_is_refused(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", *FAST, "--out", str(a), "--cut", "conv1"]) == 0
    assert main(["train", *FAST, "--out", str(b), "--dataset", "breast-cancer"]) == 0
    capsys.readouterr()
    (b / "checkpoint.pt").write_bytes((a / "checkpoint.pt").read_bytes())
    assert main(["train", *FAST, "--out", str(b), "--resume"]) == 2
    assert "another configuration" in _err(capsys)


def test_nan_in_the_data_is_refused(tmp_path, capsys, monkeypatch):
    import nopeek.data.bundled as data

    real = data.load_breast_cancer

    def poisoned(*a, **k):
        bunch = real(*a, **k)
        bunch.data[3, 2] = float("nan")
        return bunch

    monkeypatch.setattr(data, "load_breast_cancer", poisoned)
    out = tmp_path / "run"
    assert main(["train", *FAST, "--dataset", "breast-cancer", "--out", str(out)]) == 2
    assert "NaN" in _err(capsys)
    assert not out.exists()


def test_the_installed_command_exits_2_without_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nopeek.cli.main",
            "train",
            "--alpha",
            "-0.5",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: alpha must be >= 0") and "Traceback" not in proc.stderr
    assert torch.__version__  # the import worked in the child too
