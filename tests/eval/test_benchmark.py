"""nopeek benchmark: a tiny attack x defense grid writes its table, resumes, and marks the cells
where an attack or a defense does not apply (with the reason), before or after training."""

import json

import pytest

from nopeek.cli.main import main
from nopeek.errors import ConfigError
from nopeek.eval import benchmark as B
from nopeek.eval.benchmark import BenchmarkSpec, parse_defense, run_benchmark
from nopeek.eval.dcs import dcs

TRAIN = {"epochs": 1, "max_train": 120, "dcor_samples": 24, "record_samples": 32}
ATTACKS = ["white-box:n_samples=4", "grn", "norm", "known-pairs"]


def _spec(**over):
    spec = dict(
        configurations=["vanilla", "vertical"],
        datasets=["digits", "breast-cancer"],
        defenses=["none", "marvell"],
        attacks=list(ATTACKS),
        seeds=[0, 1],
        train=dict(TRAIN),
        attack_options={"steps": 3},
    )
    return BenchmarkSpec(**(spec | over))


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "b"
    return out, run_benchmark(_spec(), out, quiet=True)


def _cell(cells, conf, data, defense, attack):
    (found,) = [
        c
        for c in cells
        if (c["configuration"], c["dataset"], c["defense"], c["attack"])
        == (conf, data, defense, attack)
    ]
    return found


def test_the_grid_writes_one_table_with_every_cell(grid):
    out, cells = grid
    assert len(cells) == 2 * 2 * 2 * 4
    for name in ("table.md", "table.csv", "table.json", "heatmap.png", "benchmark.json"):
        assert (out / name).stat().st_size > 100, name
    assert json.loads((out / "table.json").read_text()) == cells
    assert (out / "table.csv").read_text().count("\n") == len(cells) + 1
    md = (out / "table.md").read_text()
    assert md.startswith("| configuration | data | defense | accuracy | white-box leak |")
    assert md.count("\n| vertical | breast-cancer |") == 2
    ok = _cell(cells, "vertical", "breast-cancer", "marvell", "white-box")
    assert ok["status"] == "ok" and ok["leak_n"] == 2 and ok["accuracy_n"] == 2
    assert ok["leak_std"] is not None and 0 <= ok["leak_mean"] <= 1
    ref = _cell(cells, "vertical", "breast-cancer", "none", "white-box")["accuracy_mean"]
    assert ok["dcs"] == pytest.approx(dcs(ok["leak_mean"], ok["accuracy_mean"], mp_ideal=ref))
    assert 0 < ok["c_dcs"] <= 1


def test_cells_that_do_not_apply_say_why(grid):
    out, cells = grid
    grn = _cell(cells, "vanilla", "digits", "none", "grn")
    assert grn["status"] == "n/a" and "a vanilla run has no feature slices" in grn["reason"]
    assert _cell(cells, "vertical", "digits", "none", "grn")["status"] == "ok"
    norm = _cell(cells, "vanilla", "digits", "none", "norm")
    assert "needs a binary task, but digits has 10 classes" in norm["reason"]
    assert _cell(cells, "vanilla", "breast-cancer", "none", "norm")["status"] == "ok"
    defense = _cell(cells, "vanilla", "digits", "marvell", "white-box")
    assert defense["status"] == "n/a" and "marvell needs binary labels" in defense["reason"]
    assert defense["accuracy_mean"] is None
    pairs = _cell(cells, "vanilla", "breast-cancer", "none", "known-pairs")  # after training
    assert pairs["status"] == "n/a" and "recorded activations of at least 2" in pairs["reason"]
    refused = json.loads((out / "refusals.json").read_text())
    assert any(k.endswith("/known-pairs") for k in refused)
    md = (out / "table.md").read_text()
    assert "n/a [1]" in md and "\n[1] " in md
    assert not (out / "sweeps" / "vanilla-digits" / "runs" / "alpha0_marvell-seed0").exists()


def test_a_second_run_reuses_every_cell(grid, monkeypatch):
    out, cells = grid

    def refuse(*args, **kwargs):
        raise AssertionError("a finished cell was computed again")

    monkeypatch.setattr("nopeek.training.trainer.train", refuse)
    monkeypatch.setattr("nopeek.attacks.run_attack", refuse)
    assert run_benchmark(_spec(), out, quiet=True) == cells


def test_the_cli_adds_a_seed_to_a_finished_grid(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["benchmark", "--configuration", "vertical", "--dataset", "breast-cancer"]
    argv += ["--defense", "none", "--attack", "grn", "--steps", "3", "--epochs", "1"]
    argv += ["--max-train", "120", "--dcor-samples", "24", "--record-samples", "32"]
    argv += ["--out", str(out), "--quiet"]
    assert main([*argv, "--seeds", "0"]) == 0
    said = capsys.readouterr().out
    assert said.startswith("1 cell (0 n/a) in ") and "table.md" in said
    first = out / "sweeps" / "vertical-breast-cancer" / "runs" / "alpha0-seed0" / "metrics.json"
    stamp = first.stat().st_mtime_ns
    assert main([*argv, "--seeds", "0,2"]) == 0
    assert first.stat().st_mtime_ns == stamp  # seed 0 reused, seed 2 trained and attacked
    (cell,) = json.loads((out / "table.json").read_text())
    assert cell["leak_n"] == 2 and cell["status"] == "ok"


def test_bad_grids_are_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown configuration 'ring'; choose from vanilla"):
        _spec(configurations=["ring"]).check()
    with pytest.raises(ConfigError, match="alpha takes a number, e.g. alpha=1"):
        parse_defense("alpha=x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main(["benchmark", "--out", str(tmp_path / "other"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds other files; pick a new --out" in err


def test_the_default_grid_takes_vision_sets_only_where_found(tmp_path):
    assert B.default_datasets(None) == ["digits", "breast-cancer"]
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"")
    assert B.default_datasets(str(tmp_path)) == ["digits", "breast-cancer"]
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"")
    assert B.default_datasets(str(tmp_path)) == ["digits", "breast-cancer", "mnist"]
