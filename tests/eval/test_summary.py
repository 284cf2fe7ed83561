"""Aggregation over seeds, the strongest attack, the trade-off score and the recommendation."""

import math

import numpy as np
import pytest

from nopeek.errors import ConfigError
from nopeek.eval import score as S
from nopeek.eval.results import make_rows, to_csv
from nopeek.eval.settings import Setting, make_settings, parse_attacks, parse_defense_option
from nopeek.eval.summary import budget_misses, recommend, summarize


def _rows(setting, seed, acc, ssims, auc=None):
    base = {"setting": setting.slug, "label": setting.label, "run": f"runs/{setting.slug}-{seed}",
            "alpha": setting.alpha, "defenses": "+".join(setting.defenses),
            "seed": seed}  # fmt: skip
    attacks = {
        f"rec{i}": {"ssim": s, "baseline_ssim": 0.2, "leak": S.reconstruction_leakage(s, 0.2)}
        for i, s in enumerate(ssims)
    }
    if auc is not None:  # chance 0.5: leak = 2 * (folded AUC - 0.5)
        folded = S.symmetric_auc(auc)
        attacks["norm"] = {"auc": auc, "auc_folded_max": folded, "chance_auc_folded_max": 0.5,
                           "leak": 2 * (folded - 0.5)}  # fmt: skip
    return make_rows(base, {"test_accuracy": acc, "dcor_test": 0.5}, attacks)


UNDEF, NOPEEK, NOISE = Setting(), Setting(2.0), Setting(0.0, ("noise:r=1",))


def _crafted():
    rows = []
    rows += _rows(UNDEF, 0, 0.98, [0.9, 0.7], auc=0.1) + _rows(UNDEF, 1, 0.96, [0.8, 0.85], 0.2)
    rows += _rows(NOPEEK, 0, 0.95, [0.4, 0.25], 0.6) + _rows(NOPEEK, 1, 0.93, [0.2, 0.1], 0.5)
    rows += _rows(NOISE, 0, 0.90, [0.25, 0.2], 0.55) + _rows(NOISE, 1, 0.90, [0.1, 0.1], 0.55)
    return rows


def test_strongest_attack_mean_and_std_over_seeds():
    undef, nopeek, noise = summarize(_crafted())
    # per run the best SSIM: 0.9 and 0.85 -> mean 0.875, sample std
    assert undef.best_ssim.mean == pytest.approx(0.875)
    assert undef.best_ssim.std == pytest.approx(np.std([0.9, 0.85], ddof=1))
    # label AUC counts max(auc, 1 - auc): 0.9 and 0.8
    assert undef.label_auc.mean == pytest.approx(0.85)
    assert nopeek.accuracy.mean == pytest.approx(0.94)
    assert noise.accuracy.std == 0.0


def test_tradeoff_score_formula():
    undef, nopeek, _ = summarize(_crafted())
    # normalised leakage per run = max((ssim - 0.2) / 0.8, 2 * (sym_auc - 0.5))
    leak = np.mean([max((0.4 - 0.2) / 0.8, 0.2), max(0.0, 0.0)])
    d_acc = 0.97 - 0.94
    expected = 1 / (1 + math.sqrt(0.5 * d_acc**2 + 0.5 * leak**2))
    assert nopeek.score == pytest.approx(expected)
    assert undef.score == pytest.approx(1 / (1 + math.sqrt(0.5) * np.mean([0.875, 0.8125])))


def test_recommendation_is_the_most_accurate_setting_within_thresholds():
    summaries = summarize(_crafted())
    # mean leak: undefended 0.84, nopeek (0.25 + 0) / 2 = 0.125, noise (0.1 + 0.1) / 2 = 0.1
    assert [s.leakage.mean for s in summaries] == pytest.approx([0.84375, 0.125, 0.1])
    assert recommend(summaries).label == "alpha=2"  # leak <= 0.2 by default
    assert recommend(summaries, max_leak=0.11).label == "noise:r=1"
    assert recommend(summaries, max_leak=0.05) is None
    # SSIM budgets (images): nopeek's 0.3 is not < 0.3
    assert recommend(summaries, max_leak=None, max_ssim=0.3).label == "noise:r=1"
    assert recommend(summaries, max_leak=None, max_ssim=0.31).label == "alpha=2"
    # accuracy: undefended 0.97, nopeek 0.94 (3 points lost), noise 0.90 (7 points)
    assert recommend(summaries, max_accuracy_drop=5).label == "alpha=2"
    assert recommend(summaries, max_accuracy_drop=2) is None
    misses = budget_misses(summaries[2], max_accuracy_drop=5, reference_accuracy=0.97)
    assert misses == {"accuracy_drop": pytest.approx(2.0)}


def test_a_result_without_leak_is_refused_in_one_line():
    rows = _rows(UNDEF, 0, 0.9, [0.5])
    del rows[0]["leak"]
    with pytest.raises(ConfigError, match="has no 'leak'.*rerun the sweep"):
        summarize(rows)


def test_score_helpers():
    assert S.symmetric_auc(0.3) == 0.7
    assert S.reconstruction_leakage(1.0, 0.3) == 1.0
    assert S.tradeoff_score(0.5, 0.9, 1.0) < S.tradeoff_score(0.9, 0.9, 1.0) < 1.0


def test_settings_grammar():
    assert parse_defense_option("none") == ()
    assert parse_defense_option("cut-noise:sigma=0.5,clip=1+max-norm") == (
        "cut-noise:sigma=0.5,clip=1",
        "max-norm",
    )
    labels = [s.label for s in make_settings([0, 1], ["none", "max-norm"])]
    assert labels == ["undefended", "max-norm", "alpha=1", "alpha=1 + max-norm"]
    assert parse_attacks(["norm,direction", "white-box:steps=3,tv=0.1"]) == [
        "norm",
        "direction",
        "white-box:steps=3,tv=0.1",
    ]


def test_csv_encodes_lists_and_missing_values():
    text = to_csv(_rows(UNDEF, 0, 0.9, [0.5]) + [{"setting": "x", "attack": "a", "auc": None}])
    header, first, second = text.splitlines()
    assert header.startswith("setting,label,run,dataset")
    assert second.split(",")[header.split(",").index("auc")] == ""
