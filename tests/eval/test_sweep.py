"""Sweeps: one row per run x attack, resume skips finished work, up-front refusals, --jobs."""

import csv
import json

import pytest

from nopeek.config import TrainConfig
from nopeek.errors import ConfigError
from nopeek.eval.results import CONFIG_COLUMNS
from nopeek.eval.settings import Setting
from nopeek.eval.sweep import is_finished, run_dir, run_sweep

ATTACKS = ["inverse-network:steps=20,width=8", "white-box:steps=5,n_samples=8"]


@pytest.fixture
def sweep(tiny_sweep):
    return tiny_sweep


@pytest.fixture
def tiny_spec(sweep_spec):
    return sweep_spec


def _mtimes(out):
    return {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.json")}


def test_results_csv_has_one_row_per_run_and_attack(sweep):
    out, rows = sweep
    with open(out / "results.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(rows) == 2 * 2 * 2  # settings x seeds x attacks
    keys = {(r["setting"], r["seed"], r["attack"]) for r in table}
    assert len(keys) == 8
    assert {r["attack"] for r in table} == {"inverse-network", "white-box"}
    header = list(table[0])
    assert header[:3] == ["setting", "label", "run"]
    assert header[3 : 3 + len(CONFIG_COLUMNS)] == CONFIG_COLUMNS
    for col in ("test_accuracy", "dcor_test", "attack", "ssim", "baseline_ssim", "psnr",
                "attack_cut", "threat_model"):  # fmt: skip
        assert col in header, col
    # every cell matches the run's own files
    for r in table:
        metrics = json.loads((out / r["run"] / "metrics.json").read_text())
        result = json.loads((out / r["run"] / "attacks" / f"{r['attack']}.json").read_text())
        assert float(r["test_accuracy"]) == metrics["test_accuracy"]
        assert float(r["ssim"]) == result["ssim"]
        assert float(r["alpha"]) == metrics["alpha"] and int(r["seed"]) == metrics["seed"]
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(rows))


def test_run_directories_are_ordinary_runs(sweep):
    out, _ = sweep
    path = run_dir(out, Setting(1.0), 1)
    assert path.name == "alpha1-seed1"
    config = json.loads((path / "config.json").read_text())
    assert config["alpha"] == 1.0 and config["seed"] == 1 and config["epochs"] == 2
    assert (path / "attacks" / "inverse-network.png").is_file()


def test_resume_skips_finished_runs_and_redoes_only_missing_work(sweep, tiny_spec):
    out, rows = sweep
    before = _mtimes(out)
    assert run_sweep(tiny_spec(), out, quiet=True) == rows
    assert _mtimes(out) == before  # nothing retrained or re-attacked
    # an interrupted sweep: one attack result and one run's metrics are missing
    lost_attack = run_dir(out, Setting(), 1) / "attacks" / "white-box.json"
    lost_attack.unlink()
    lost_run = run_dir(out, Setting(1.0), 0)
    (lost_run / "metrics.json").unlink()
    assert not is_finished(lost_run, ATTACKS, tiny_spec().base)
    run_sweep(tiny_spec(), out, quiet=True)
    after = _mtimes(out)
    changed = {p for p in after if before.get(p) != after[p]}
    assert lost_attack in changed and lost_run / "metrics.json" in changed
    untouched = run_dir(out, Setting(), 0)
    assert not any(untouched in p.parents for p in changed)
    # the other attack of the partly-done run was kept
    assert run_dir(out, Setting(), 1) / "attacks" / "inverse-network.json" not in changed


def test_other_options_are_refused_in_an_existing_sweep(sweep, tmp_path, tiny_spec):
    out, _ = sweep
    with pytest.raises(ConfigError, match="other epochs"):
        run_sweep(tiny_spec(base=TrainConfig(epochs=3).resolved()), out, quiet=True)
    with pytest.raises(ConfigError, match="attack options"):
        run_sweep(tiny_spec(attacks=["inverse-network:steps=30,width=8"]), out, quiet=True)


def test_label_attack_on_multiclass_task_is_refused_up_front(tmp_path, tiny_spec):
    with pytest.raises(ConfigError, match="one-vs-rest") as err:
        run_sweep(tiny_spec(attacks=["norm"]), tmp_path / "s", quiet=True)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "s").exists()


def test_bad_defense_and_unknown_attack_are_refused_up_front(tmp_path, tiny_spec):
    with pytest.raises(ConfigError, match="unknown attack"):
        run_sweep(tiny_spec(attacks=["nope"]), tmp_path / "s", quiet=True)
    with pytest.raises(ConfigError):
        run_sweep(tiny_spec(settings=[Setting(0, ("marvell:s=1",))]), tmp_path / "s", quiet=True)
    assert not (tmp_path / "s").exists()


def test_parallel_jobs_give_the_same_results(tmp_path, tiny_spec):
    spec = tiny_spec(settings=[Setting(1.0)], seeds=[0, 1], attacks=[])
    one = run_sweep(spec, tmp_path / "one", jobs=1, quiet=True)
    two = run_sweep(spec, tmp_path / "two", jobs=2, quiet=True)
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        for key in ("run", "test_accuracy", "dcor_test", "train_loss_per_epoch", "test_loss"):
            assert a[key] == b[key], key
