"""``nopeek train --defense ...`` end to end: composition, bad combinations, exact resume."""

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

from nopeek import train
from nopeek.cli.main import main
from nopeek.io import safe_torch_load

FAST = ["--epochs", "1", "--dcor-samples", "50", "--quiet"]
COMPOSED = [
    "--defense", "cut-noise:gaussian,sigma=0.5,clip=1",
    "--defense", "dp-sgd:epsilon=8,delta=1e-5",
    "--defense", "max-norm",
    "--defense", "marvell:s=1",
    "--alpha", "0.5",
    "--delta", "1e-5",
]  # fmt: skip


def _one_line_error(capsys):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_the_issue_command_composes_every_defense(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", *COMPOSED, "--one-vs-rest", "0", "--out", str(out), *FAST]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "epsilon_cut" in printed and "epsilon_dpsgd" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["defenses"] == [COMPOSED[i] for i in (1, 3, 5, 7)]
    assert config["delta"] == 1e-5
    m = json.loads((out / "metrics.json").read_text())
    assert m["delta"] == 1e-5 and m["cut_noise_sigma"] == 0.5
    assert m["epsilon_cut"] > 0 and 0 < m["epsilon_dpsgd"] <= 8.0
    assert m["dpsgd_guarantee_holds"] is False  # dCor, max-norm and Marvell couple samples
    assert m["dpsgd_guarantee_voided_by"] == "nopeek alpha=0.5, max-norm, marvell"
    for key in ("marvell_noise_power", "max_norm_noise_power", "marvell_power_budget"):
        assert m[key] > 0


def test_negative_sigma_is_one_line_exit_2(tmp_path, capsys):
    argv = ["train", "--defense", "cut-noise:gaussian,sigma=-0.5", "--out", str(tmp_path / "r")]
    assert main(argv + FAST) == 2
    assert "sigma must be a finite number > 0, got -0.5" in _one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_marvell_on_multi_class_digits_is_one_line_exit_2(tmp_path, capsys):
    argv = ["train", "--defense", "marvell:s=1", "--out", str(tmp_path / "r"), *FAST]
    assert main(argv) == 2
    line = _one_line_error(capsys)
    assert "marvell needs binary labels" in line and "--one-vs-rest" in line


def _bn_digits_model(config, dataset):
    """digits-cnn's block names with a BatchNorm in the client segment (as in resnet18)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return nn.Sequential(OrderedDict(
            conv1=nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
            conv2=nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
            fc1=nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 16), nn.ReLU()),
            fc2=nn.Linear(16, dataset.n_classes),
        ))  # fmt: skip


def test_dpsgd_on_a_batchnorm_model_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("nopeek.training.assemble._seeded_model", _bn_digits_model)
    argv = ["train", "--defense", "dp-sgd:epsilon=8", "--out", str(tmp_path / "r"), *FAST]
    assert main(argv) == 2
    line = _one_line_error(capsys)
    assert "ModuleValidator.fix" in line and "GroupNorm" in line


def _weights(run_dir):
    state = safe_torch_load(run_dir / "checkpoint.pt")
    return [t for sds in state["parties"].values() for sd in sds for t in sd.values()]


def test_resume_with_noisy_defenses_gives_the_uninterrupted_weights(
    interrupt, tiny_config, tmp_path
):
    specs = ["cut-noise:gaussian,sigma=0.5,clip=1", "dp-sgd:sigma=1.0", "marvell:s=1"]
    cfg = tiny_config(epochs=3, one_vs_rest=0, defenses=specs)

    def hooks(at):  # the defenses come from cfg.defenses; only the crash is passed by hand
        return [interrupt(at)]

    full = train(cfg, tmp_path / "full", quiet=True, hooks=hooks(None)).metrics
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", quiet=True, hooks=hooks(2))
    resumed = train(cfg, tmp_path / "cut", resume=True, quiet=True, hooks=hooks(None)).metrics
    for a, b in zip(_weights(tmp_path / "full"), _weights(tmp_path / "cut"), strict=True):
        assert torch.equal(a, b)
    for key in ("test_accuracy", "epsilon_cut", "epsilon_dpsgd", "marvell_noise_power"):
        assert resumed[key] == full[key]
