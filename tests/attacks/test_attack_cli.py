"""``nopeek attack``: writes the attack's JSON (+ PNG) and one summary line; bad input -> exit 2."""

import json
import shutil

import pytest

from nopeek import train
from nopeek.cli.main import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A vanilla 10-class run, a binary one, a u-shaped one and one without recorded gradients."""
    from nopeek import TrainConfig

    root = tmp_path_factory.mktemp("runs")
    base = dict(dataset="digits", epochs=2, batch_size=64, seed=0, dcor_samples=64)
    configs = {
        "vanilla": TrainConfig(**base),
        "binary": TrainConfig(**base, one_vs_rest=3),
        "ushaped": TrainConfig(**base, topology="u-shaped", cut="conv2,fc1"),
        "nograds": TrainConfig(**base, record_samples=0),
    }
    for name, config in configs.items():
        train(config, root / name, quiet=True)
    return root


def _run(argv, capsys):
    code = main(["attack", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _fails_cleanly(argv, capsys, match: str):
    code, out, err = _run(argv, capsys)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert match in err
    assert out == ""
    return err


def test_white_box_writes_json_and_png_and_one_line(runs, capsys):
    run = runs / "vanilla"
    argv = ["--run", str(run), "--attack", "white-box", "--steps", "30", "--n-samples", "8"]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    assert out.count("\n") == 1 and "ssim" in out and "baseline" in out
    saved = json.loads((run / "attacks" / "white-box.json").read_text())
    for key in ("attack", "threat_model", "n_samples", "cut", "run", "ssim", "psnr", "mse"):
        assert key in saved
    for key in ("baseline_ssim", "baseline_psnr", "baseline_mse", "dcor_reconstruction"):
        assert key in saved
    assert saved["n_samples"] == 8 and saved["cut"] == "conv2" and saved["steps"] == 30
    assert (run / "attacks" / "white-box.png").is_file()


def test_label_attack_writes_auc(runs, capsys):
    run = runs / "binary"
    code, out, err = _run(["--run", str(run), "--attack", "norm"], capsys)
    assert code == 0, err
    assert "auc" in out
    saved = json.loads((run / "attacks" / "norm.json").read_text())
    assert 0.0 <= saved["auc"] <= 1.0 and len(saved["auc_per_epoch"]) == 2
    assert "ssim" not in saved


def test_missing_run_directory(tmp_path, capsys):
    _fails_cleanly(["--run", str(tmp_path / "nope"), "--attack", "white-box"], capsys, "no run")


def test_unknown_attack_lists_the_names(runs, capsys):
    run = runs / "vanilla"
    err = _fails_cleanly(["--run", str(run), "--attack", "mind-reading"], capsys, "unknown")
    assert "white-box" in err and "inverse-network" in err
    assert not (run / "attacks" / "mind-reading.json").exists()


def test_label_attack_where_the_gradient_receiver_holds_labels(runs, capsys):
    run = runs / "ushaped"
    argv = ["--run", str(run), "--attack", "norm", "--cut", "conv2"]
    _fails_cleanly(argv, capsys, "holds the labels")
    assert not (run / "attacks").exists()


def test_reconstruction_at_the_label_side_cut(runs, capsys):
    run = runs / "ushaped"
    argv = ["--run", str(run), "--attack", "white-box", "--cut", "fc1"]
    _fails_cleanly(argv, capsys, "holds the raw inputs")
    assert not (run / "attacks").exists()


def test_label_attack_without_recorded_gradients(runs, capsys):
    run = runs / "nograds"
    _fails_cleanly(["--run", str(run), "--attack", "norm"], capsys, "--record-samples")
    assert not (run / "attacks").exists()


@pytest.mark.parametrize("attack", ["white-box", "inverse-network", "unsplit"])
def test_missing_checkpoint(runs, tmp_path, capsys, attack):
    run = tmp_path / "copy"
    shutil.copytree(runs / "vanilla", run, ignore=shutil.ignore_patterns("attacks"))
    (run / "checkpoint.pt").unlink()
    _fails_cleanly(["--run", str(run), "--attack", attack], capsys, "checkpoint")
    assert not (run / "attacks").exists()


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--steps", "0"], "--steps"),
        (["--n-samples", "-1"], "--n-samples"),
        (["--aux-size", "100000"], "--aux-size"),
        (["--cut", "fc1"], "no cut 'fc1'"),
    ],
)
def test_bad_options(runs, tmp_path, capsys, extra, match):
    run = tmp_path / "copy"
    shutil.copytree(runs / "vanilla", run, ignore=shutil.ignore_patterns("attacks"))
    _fails_cleanly(["--run", str(run), "--attack", "inverse-network", *extra], capsys, match)
    assert not (run / "attacks").exists()


def test_several_attacks_with_their_own_options_in_one_call(runs, tmp_path, capsys):
    """``--attack`` reads as in sweep and audit: comma-separated specs with options, repeatable,
    each attack's budget keys (steps=) overriding the shared flags for it alone."""
    run = tmp_path / "copy"
    shutil.copytree(runs / "vanilla", run, ignore=shutil.ignore_patterns("attacks"))
    argv = ["--run", str(run), "--attack", "white-box:tv=0,steps=4", "--n-samples", "4"]
    code, out, err = _run([*argv, "--attack", "inverse-network:width=16", "--steps", "2"], capsys)
    assert code == 0, err
    assert out.count("\n") == 2
    white = json.loads((run / "attacks" / "white-box.json").read_text())
    inverse = json.loads((run / "attacks" / "inverse-network.json").read_text())
    assert white["steps"] == 4 and white["settings"]["tv"] == 0.0 and white["n_samples"] == 4
    assert inverse["steps"] == 2 and inverse["settings"]["width"] == 16


@pytest.mark.parametrize(
    ("attack", "match"),
    [
        ("white-box,white-box:tv=0", "lists white-box twice"),
        ("white-box,inverse-network:widht=8", "unknown option 'widht' for attack inverse-network"),
        ("white-box:tv", "needs key=value"),
        ("white-box,mind-reading", "unknown attack 'mind-reading'"),
    ],
)
def test_every_attack_spec_is_checked_before_any_runs(runs, tmp_path, capsys, attack, match):
    run = tmp_path / "copy"
    shutil.copytree(runs / "vanilla", run, ignore=shutil.ignore_patterns("attacks"))
    _fails_cleanly(["--run", str(run), "--attack", attack], capsys, match)
    assert not (run / "attacks").exists()
