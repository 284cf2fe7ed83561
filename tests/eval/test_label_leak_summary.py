"""The report card, scores and tune budget read a label attack's leak: its worst epoch over
the chance level of its own scores."""

import pytest

from nopeek.eval.render import to_markdown
from nopeek.eval.report import report_card
from nopeek.eval.results import make_rows
from nopeek.eval.settings import Setting
from nopeek.eval.summary import label_leak, meets, summarize
from nopeek.eval.tune import Budget


def _rows(setting, seed, acc, label_row):
    base = {"setting": setting.slug, "label": setting.label, "run": f"runs/{setting.slug}-{seed}",
            "alpha": setting.alpha, "defenses": "+".join(setting.defenses),
            "seed": seed}  # fmt: skip
    return make_rows(base, {"test_accuracy": acc}, {"norm": label_row})


UNDEF, NOISY = Setting(), Setting(0.0, ("max-norm",))


def _label(auc, per_epoch, worst, chance):
    return {"auc": auc, "auc_per_epoch": per_epoch, "auc_folded_max": worst,
            "auc_folded_max_epoch": 0, "chance_auc_folded_max": chance,
            "leak": (worst - chance) / (1 - chance), "threat_model": "gradients"}  # fmt: skip


def test_worst_epoch_leak_over_chance_drives_summary_score_card_and_budget():
    # undefended: the final epoch names the classes backwards (auc 0.05) -> folded 0.95;
    # an earlier epoch reached 0.99. "max-norm": final epoch near chance, but epoch 1 reached
    # 0.8; the same scores against shuffled labels reach 0.6 at their worst epoch.
    rows = _rows(UNDEF, 0, 0.9, _label(0.05, [0.99, 0.05], 0.99, 0.6))
    rows += _rows(NOISY, 0, 0.85, _label(0.52, [0.8, 0.52], 0.8, 0.6))
    undef, noisy = summarize(rows)
    assert undef.label_auc.mean == 0.99 and noisy.label_auc.mean == 0.8
    assert noisy.attacks["norm"].mean == pytest.approx(0.5)  # (0.8 - 0.6) / (1 - 0.6)
    assert noisy.leakage.mean == pytest.approx(0.5)
    assert not meets(noisy, max_leak=None, max_label_auc=0.6)  # the final 0.52 would pass
    assert not meets(noisy) and meets(noisy, max_leak=0.51)
    assert not Budget(max_label_auc=0.6).ok(noisy)
    card = report_card([undef, noisy])
    table = next(b for b in card if b[0] == "table")
    cells = {row[0]: row[2:] for row in table[2]}
    assert cells["norm"][0].startswith("leak 0.975") and "leaks" in cells["norm"][0]
    assert "leak ≤ 0.2" in table[2][1][1]
    text = to_markdown(card)
    assert "An attacker who sees the gradients sent back across the cut during training " in text
    said = "infers your training labels with AUC 0.80 at its best epoch (chance for as many "
    assert said + "epochs: 0.60): **leaks** (leak 0.50 of 1)." in text
    assert "costs 5.0 points of test accuracy (90.0 % without a defense, 85.0 % with it)" in text
    for internal in ("best_ssim", "label_auc", "undefended (undefended)", "leak_max"):
        assert internal not in text


def test_rows_of_older_releases_fall_back_to_the_epochs_then_the_final_auc():
    assert label_leak({"auc": 0.4, "auc_per_epoch": [0.1, None, 0.4]}) == 0.9
    assert label_leak({"auc": 0.4, "leak_max": 0.8}) == 0.8
    assert label_leak({"auc": 0.3}) == 0.7
    assert label_leak({"auc": None}) is None
