"""Label leakage as an attacker reads it: folded AUC, its orientation, per epoch, worst epoch,
and the leak above the same scores' chance level."""

import json

import pytest
import torch
from sklearn.metrics import roc_auc_score

from nopeek import TrainConfig, train
from nopeek.attacks import run_attack
from nopeek.attacks.metrics import fold_auc, label_leak, label_report
from nopeek.cli._fmt import number
from nopeek.cli.main import main


def test_fold_and_worst_epoch_against_sklearn():
    gen = torch.Generator().manual_seed(0)
    y = {e: (torch.arange(60) % 3 == 0).long() for e in range(3)}
    scores = {
        0: y[0].float() + torch.randn(60, generator=gen),  # partly separates, as named
        1: -y[1].float() + 0.01 * torch.randn(60, generator=gen),  # separates, named backwards
        2: torch.randn(60, generator=gen),  # chance
    }
    report = label_report(y, scores, None, n_classes=2)
    out = label_leak(report["auc_per_epoch"], report["epochs"])
    aucs = [roc_auc_score(y[e].numpy(), scores[e].numpy()) for e in range(3)]
    assert report["auc_per_epoch"] == pytest.approx(aucs)
    assert out["auc_folded_per_epoch"] == pytest.approx([max(a, 1 - a) for a in aucs])
    assert aucs[1] == 0.0 and out["auc_folded_per_epoch"][1] == 1.0  # total leak, named backwards
    assert out["auc_folded_max"] == 1.0 and out["auc_folded_max_epoch"] == 1
    assert out["auc_folded"] == pytest.approx(max(aucs[2], 1 - aucs[2]))
    assert out["auc_orientation"] == ("as named" if aucs[2] >= 0.5 else "flipped")


def test_orientation_ties_none_and_multiclass():
    assert label_leak([0.3], [4]) == {
        "auc_folded": 0.7,
        "auc_orientation": "flipped",
        "auc_folded_per_epoch": [0.7],
        "auc_folded_max": 0.7,
        "auc_folded_max_epoch": 4,
    }
    tie = label_leak([0.8, 0.2, None], [0, 1, 2])  # 0.8 and 0.2 leak alike: the earlier wins
    assert tie["auc_folded_max_epoch"] == 0 and tie["auc_folded"] is None
    assert tie["auc_orientation"] is None
    multi = label_leak([0.3, 0.6], [0, 1], binary=False)  # classes already matched: no fold
    assert multi["auc_folded_per_epoch"] == [0.3, 0.6] and multi["auc_orientation"] == "as named"
    assert fold_auc(0.5) == 0.5 and fold_auc(0.0) == 1.0


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("leak") / "run"
    cfg = TrainConfig(dataset="digits", one_vs_rest=0, epochs=3, seed=0, dcor_samples=64)
    train(cfg, out, quiet=True)
    return out


def test_naming_the_classes_backwards_reads_as_the_same_leak(binary_run):
    named = run_attack(binary_run, "direction", write=False)
    backwards = run_attack(binary_run, "direction", options={"positive": "majority"}, write=False)
    assert backwards.auc == pytest.approx(1 - named.auc)
    assert backwards.auc_folded == pytest.approx(named.auc_folded) and named.auc_folded >= 0.5
    assert backwards.leak == pytest.approx(named.leak)
    assert {named.auc_orientation, backwards.auc_orientation} == {"as named", "flipped"}
    for r in (named, backwards):
        per = [max(a, 1 - a) for a in r.auc_per_epoch]
        assert r.auc_folded_per_epoch == pytest.approx(per)
        assert r.auc_folded_max == pytest.approx(max(per))
        assert r.epochs[per.index(max(per))] == r.auc_folded_max_epoch
        assert r.auc_folded == pytest.approx(per[-1])
        chance = r.chance_auc_folded_max
        assert 0.5 <= chance < r.auc_folded_max
        assert r.leak == pytest.approx((r.auc_folded_max - chance) / (1 - chance))


def test_json_and_cli_line_report_the_leak(binary_run, capsys):
    assert main(["attack", "--run", str(binary_run), "--attack", "norm"]) == 0
    line = capsys.readouterr().out
    saved = json.loads((binary_run / "attacks" / "norm.json").read_text())
    keys = ("auc", "auc_folded", "auc_orientation", "auc_folded_per_epoch", "auc_folded_max")
    keys += ("auc_folded_max_epoch", "chance_auc_folded_max", "leak")
    assert all(k in saved for k in keys) and len(saved["auc_folded_per_epoch"]) == 3
    assert line.count(f"leak {number(saved['leak'])}") == 1
    assert f"auc {number(saved['auc'])} ({saved['auc_orientation']})" in line
    epoch = saved["auc_folded_max_epoch"] + 1
    worst = f"auc_folded_max {number(saved['auc_folded_max'])} at epoch {epoch} of 3"
    assert f"{worst} (chance {number(saved['chance_auc_folded_max'])})" in line
