"""Label leakage as an attacker reads it: folded AUC, its orientation, per epoch, worst epoch."""

import json

import pytest
import torch
from sklearn.metrics import roc_auc_score

from nopeek import TrainConfig, train
from nopeek.attacks import run_attack
from nopeek.attacks.metrics import fold_auc, label_leak, label_report
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
    assert out["leak_per_epoch"] == pytest.approx([max(a, 1 - a) for a in aucs])
    assert aucs[1] == 0.0 and out["leak_per_epoch"][1] == 1.0  # total leak, named backwards
    assert out["leak_max"] == 1.0 and out["leak_max_epoch"] == 1
    assert out["leak"] == pytest.approx(max(aucs[2], 1 - aucs[2]))
    assert out["leak_orientation"] == ("as named" if aucs[2] >= 0.5 else "flipped")


def test_orientation_ties_none_and_multiclass():
    assert label_leak([0.3], [4]) == {
        "leak": 0.7,
        "leak_orientation": "flipped",
        "leak_per_epoch": [0.7],
        "leak_max": 0.7,
        "leak_max_epoch": 4,
    }
    tie = label_leak([0.8, 0.2, None], [0, 1, 2])  # 0.8 and 0.2 leak alike: the earlier wins
    assert tie["leak_max_epoch"] == 0 and tie["leak"] is None and tie["leak_orientation"] is None
    multi = label_leak([0.3, 0.6], [0, 1], binary=False)  # classes already matched: no fold
    assert multi["leak_per_epoch"] == [0.3, 0.6] and multi["leak_orientation"] == "as named"
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
    assert backwards.leak == pytest.approx(named.leak) and named.leak >= 0.5
    assert {named.leak_orientation, backwards.leak_orientation} == {"as named", "flipped"}
    for r in (named, backwards):
        per = [max(a, 1 - a) for a in r.auc_per_epoch]
        assert r.leak_per_epoch == pytest.approx(per)
        assert r.leak_max == pytest.approx(max(per))
        assert r.epochs[per.index(max(per))] == r.leak_max_epoch
        assert r.leak == pytest.approx(per[-1])


def test_json_and_cli_line_report_the_leak(binary_run, capsys):
    assert main(["attack", "--run", str(binary_run), "--attack", "norm"]) == 0
    line = capsys.readouterr().out
    saved = json.loads((binary_run / "attacks" / "norm.json").read_text())
    keys = ("auc", "leak", "leak_orientation", "leak_per_epoch", "leak_max", "leak_max_epoch")
    assert all(k in saved for k in keys) and len(saved["leak_per_epoch"]) == 3
    assert f"leak {saved['leak']:.4g} (auc {saved['auc']:.4g} {saved['leak_orientation']})" in line
    epoch = saved["leak_max_epoch"] + 1
    assert f"worst: leak {saved['leak_max']:.4g} at epoch {epoch} of 3" in line
