"""VFLAIR's defense capability scores (eval/dcs.py) against hand computations of the formulas in
VFLAIR's src/metrics ("Metrics & Benchmark.md", data_process.py), and in the summaries/report."""

import math

import pytest

from nopeek.errors import ConfigError
from nopeek.eval.dcs import c_dcs, dcs, defense_scores, t_dcs
from nopeek.eval.render import to_markdown
from nopeek.eval.report import report_card, settings_table
from nopeek.eval.results import make_rows
from nopeek.eval.score import tradeoff_score
from nopeek.eval.settings import Setting
from nopeek.eval.summary import summarize


def test_dcs_by_hand():
    # AP 0.4, MP 0.85 against the undefended MP 0.95: D = sqrt(0.5 * 0.4^2 + 0.5 * 0.1^2)
    assert dcs(0.4, 0.85, mp_ideal=0.95) == pytest.approx(1 / (1 + math.sqrt(0.085)))
    assert dcs(0.4, 0.85, mp_ideal=0.95) == pytest.approx(0.774265, abs=1e-6)
    # beta weighs the accuracy gap: sqrt(0.8 * 0.16 + 0.2 * 0.01) = sqrt(0.13)
    assert dcs(0.4, 0.85, mp_ideal=0.95, beta=0.2) == pytest.approx(0.734994, abs=1e-6)
    # one-sided gaps: more accuracy than undefended, or AP under the ideal, cost nothing
    assert dcs(0.0, 0.99, mp_ideal=0.95) == 1.0
    assert dcs(-0.1, 0.95, mp_ideal=0.95, ap_ideal=0.0) == 1.0
    with pytest.raises(ConfigError, match=r"beta weighs the accuracy gap .* in \[0, 1\]; got 2"):
        dcs(0.1, 0.9, mp_ideal=0.9, beta=2)


def test_t_dcs_and_c_dcs_by_hand():
    assert t_dcs([0.9, 0.7, 0.8]) == pytest.approx(0.8)
    assert t_dcs([]) is None
    # equal weights over the types tested (VFLAIR's average, -1 = untested left out)
    assert c_dcs({"label": 0.8, "reconstruction": 0.6, "backdoor": None}) == pytest.approx(0.7)
    assert c_dcs({"label": 0.8, "reconstruction": 0.6}, {"label": 0.25, "reconstruction": 0.75})
    assert c_dcs({"label": 0.8, "reconstruction": 0.6}, {"label": 0.25, "reconstruction": 0.75}) \
        == pytest.approx(0.65)  # fmt: skip
    assert c_dcs({}) is None
    with pytest.raises(ConfigError, match="C-DCS weights must be >= 0"):
        c_dcs({"label": 0.8}, {"label": -1})


def test_dcs_equals_the_trade_off_score_of_the_strongest_attack_at_beta_one_half():
    for ap, mp in [(0.3, 0.8), (0.0, 0.7), (0.9, 0.95)]:
        assert dcs(ap, mp, mp_ideal=0.95) == pytest.approx(tradeoff_score(mp, 0.95, ap))


def _rows(setting, seed, acc, attacks):
    base = {"setting": setting.slug, "label": setting.label, "run": f"runs/{setting.slug}-{seed}",
            "alpha": setting.alpha, "defenses": "+".join(setting.defenses),
            "seed": seed}  # fmt: skip
    return make_rows(base, {"test_accuracy": acc}, attacks)


def _attacks(inv, wb, norm):
    return {
        "inverse-network": {"kind": "reconstruction", "leak": inv, "ssim": 0.5},
        "white-box": {"kind": "reconstruction", "leak": wb, "ssim": 0.6},
        "norm": {"kind": "label", "leak": norm, "auc": 0.7},
    }


def test_summaries_report_and_card_carry_the_scores():
    undef, noisy = Setting(), Setting(1.0)
    rows = _rows(undef, 0, 0.95, _attacks(0.8, 0.9, 0.6))
    rows += _rows(undef, 1, 0.93, _attacks(0.6, 0.9, 0.4))
    rows += _rows(noisy, 0, 0.90, _attacks(0.2, 0.4, 0.1))
    rows += _rows(noisy, 1, 0.88, _attacks(0.2, 0.2, 0.3))
    a, b = summarize(rows)
    # the defended setting: MP = 0.89 against MP* = 0.94; AP = the mean leak over seeds
    gap = 0.94 - 0.89
    leaks = {"inverse-network": 0.2, "white-box": 0.3, "norm": 0.2}
    want = {k: 1 / (1 + math.sqrt(0.5 * ap**2 + 0.5 * gap**2)) for k, ap in leaks.items()}
    assert b.defense.dcs == pytest.approx(want)
    recon = (want["inverse-network"] + want["white-box"]) / 2
    assert b.defense.t_dcs == pytest.approx({"reconstruction": recon, "label": want["norm"]})
    assert b.defense.c_dcs == pytest.approx((recon + want["norm"]) / 2)
    assert a.defense.dcs["white-box"] == pytest.approx(1 / (1 + math.sqrt(0.5 * 0.81)))
    header, table = settings_table([a, b], {})[1:]
    assert header[-2:] == ["C-DCS", "Pareto-optimal on"]
    assert table[1][-2] == f"{b.defense.c_dcs:.3f}"
    card = to_markdown(report_card([a, b]))
    assert f"| C-DCS (VFLAIR) | — (1 = free and perfect) | {a.defense.c_dcs:.3f} |" in card


def test_without_the_undefended_setting_there_is_no_score():
    (only,) = summarize(_rows(Setting(1.0), 0, 0.9, _attacks(0.2, 0.3, 0.1)))
    assert only.defense is None and only.score is None
    assert defense_scores({"x": None}, {"x": "label"}, 0.9, 0.9).c_dcs is None
