"""The report card, scores and tune budget read a label attack's leak at its worst epoch."""

import pytest

from nopeek.eval import score as S
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


def test_worst_epoch_leak_drives_summary_score_card_and_budget():
    # undefended: the final epoch names the classes backwards (auc 0.05) -> leak 0.95;
    # an earlier epoch leaked 0.99. "max-norm": final epoch near chance, but epoch 1 leaked 0.8.
    rows = _rows(UNDEF, 0, 0.9, {"auc": 0.05, "auc_per_epoch": [0.99, 0.05],
                                 "leak_max": 0.99, "leak_max_epoch": 0})  # fmt: skip
    rows += _rows(NOISY, 0, 0.9, {"auc": 0.52, "auc_per_epoch": [0.8, 0.52],
                                  "leak_max": 0.8, "leak_max_epoch": 0})  # fmt: skip
    undef, noisy = summarize(rows)
    assert undef.label_auc.mean == 0.99 and noisy.label_auc.mean == 0.8
    assert noisy.attacks["norm"].mean == 0.8
    assert noisy.leakage.mean == pytest.approx(S.label_leakage(0.8))
    assert not meets(noisy, max_ssim=None, max_label_auc=0.6)  # the final 0.52 would pass
    assert not Budget(max_label_auc=0.6).ok(noisy)
    card = report_card([undef, noisy])[1]
    cells = {row[0]: row[2:] for row in card[2]}
    assert cells["norm"][0].startswith("0.990") and "leaks" in cells["norm"][1]
    assert "leak ≤ 0.6" in card[2][1][1]


def test_rows_without_leak_fields_fall_back_to_the_epochs_then_the_final_auc():
    assert label_leak({"auc": 0.4, "auc_per_epoch": [0.1, None, 0.4]}) == 0.9
    assert label_leak({"auc": 0.3}) == 0.7
    assert label_leak({"auc": None}) is None
