"""The normalised leak of every modality against direct computations: SSIM over the blind guess
for images, sklearn's R2 for tabular rows, a label attack's permutation chance level."""

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score

from nopeek.attacks import leak as L
from nopeek.attacks import metrics
from nopeek.eval import score as S


def _images(n, seed):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


# --- images ----------------------------------------------------------------------------------
def test_image_leak_is_ssim_above_the_blind_guess_by_hand():
    x = _images(12, 0)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    x_hat = (x + 0.1 * noise).clamp(0, 1)
    base = metrics.baseline_reconstruction(_images(40, 2), len(x))
    report = metrics.reconstruction_report(x, x_hat, base, data_range=1.0)
    ssim, blind = metrics.ssim(x, x_hat, data_range=1.0), metrics.ssim(x, base, data_range=1.0)
    assert report["leak"] == pytest.approx((ssim - blind) / (1 - blind))
    assert 0 < report["leak"] < 1
    exact = metrics.reconstruction_report(x, x.clone(), base, data_range=1.0)
    blind_only = metrics.reconstruction_report(x, base, base, data_range=1.0)
    assert exact["leak"] == pytest.approx(1.0) and blind_only["leak"] == 0.0
    assert S.reconstruction_leakage is L.ssim_leak  # one definition, used by the summaries


def test_normalised_clips_and_handles_a_perfect_blind_guess():
    assert L.normalised(0.1, 0.3) == 0.0 and L.normalised(1.2, 0.3) == 1.0
    assert L.normalised(0.9, 1.0) == 0.0  # nothing left to leak


# --- tabular ---------------------------------------------------------------------------------
def _rows(n=40, d=5, seed=0):
    gen = np.random.default_rng(seed)
    raw = gen.normal(loc=[10, -3, 0, 100, 1], scale=[2, 0.5, 1, 30, 4], size=(n, d))
    return torch.tensor(raw, dtype=torch.float64)


def _standardize(raw, train):
    mean, std = train.mean(0), train.std(0, correction=0)
    return ((raw - mean) / std).float(), mean, std


@pytest.mark.parametrize("noise", [0.0, 0.3, 1.0, 3.0])
def test_tabular_r2_is_sklearns_when_the_guess_is_the_victims_mean(noise):
    train, victims = _rows(200, seed=1), _rows(30, seed=2)
    gen = np.random.default_rng(3)
    x_hat_raw = victims + noise * torch.tensor(gen.normal(size=victims.shape)) * victims.std(0)
    x, mean, std = _standardize(victims, train)
    x_hat = _standardize(x_hat_raw, train)[0]
    guess = x.double().mean(0, keepdim=True).expand_as(x).float()  # the victims' own mean
    cols = L.Columns.of(_standardize(train, train)[0], mean=mean, std=std)
    out = L.tabular_report(x, x_hat, guess, cols)
    truth, recon = victims.numpy(), cols.original(x_hat).numpy()
    per = r2_score(truth, recon, multioutput="raw_values")
    assert out["r2_per_feature"] == pytest.approx(per.tolist(), abs=1e-5)
    assert out["r2"] == pytest.approx(r2_score(truth, recon), abs=1e-5)
    assert out["leak"] == pytest.approx(float(np.clip(per, 0, 1).mean()), abs=1e-5)
    assert 0.0 <= out["leak"] <= 1.0


def test_tabular_scores_in_original_units_with_tolerance_and_categories():
    # columns: continuous in [0, 100], a 0/1 flag coded 0/1, an integer grade 1..4, a constant
    train = torch.tensor([[0.0, 0, 1, 7], [100, 1, 2, 7], [50.5, 0, 3, 7], [20.25, 1, 4, 7]])
    mean, std = train.mean(0), train.std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # as nopeek.data standardizes
    cols = L.Columns.of((train - mean) / std, mean=mean, std=std)
    assert [lv is not None for lv in cols.levels] == [False, True, True, True]
    assert cols.span.tolist() == pytest.approx([100.0, 1.0, 3.0, 0.0])
    victims = torch.tensor([[10.0, 1, 2, 7], [90, 0, 4, 7]])
    recon = torch.tensor([[14.9, 0.7, 2.4, 8], [80, 0.2, 3.4, 9]])  # 4.9 ok, 10 > 5 % of 100
    guess = torch.zeros(2, 4)  # the training mean, standardized
    out = L.tabular_report((victims - mean) / std, (recon - mean) / std, guess, cols)
    assert out["r2_per_feature"][3] is None  # the constant column is left out
    assert out["rows_within_tolerance"] == 0.0  # row 0: the flag is off by 0.3 > 0.05
    assert out["categorical_exact"] == 3 / 4  # 0.7, 2.4 and 0.2 round right, 3.4 does not
    assert out["categorical_columns"] == 2 and out["tolerance"] == L.TOLERANCE
    close = victims + torch.tensor([4.9, 0.04, 0.1, 5.0])
    out = L.tabular_report((victims - mean) / std, (close - mean) / std, (close - mean) / std, cols)
    assert out["rows_within_tolerance"] == 1.0 and out["categorical_exact"] == 1.0


def test_categorical_rule():
    assert L.categorical_levels(torch.tensor([2.5, 7.5, 2.5])).tolist() == [2.5, 7.5]  # a flag
    grades = torch.arange(10, dtype=torch.float64) % L.MAX_LEVELS
    assert L.categorical_levels(grades) is not None
    assert L.categorical_levels(torch.arange(L.MAX_LEVELS + 1.0)) is None  # too many levels
    assert L.categorical_levels(torch.tensor([0.0, 0.5, 1.0])) is None  # not integer-valued


# --- labels ----------------------------------------------------------------------------------
def _epochs(n_epochs, n, make):
    gen = torch.Generator().manual_seed(0)
    y = (torch.arange(n) % 3 == 0).long()
    ids = torch.arange(n) * 7 + 100
    return (
        {e: y for e in range(n_epochs)},
        {e: make(y, gen) for e in range(n_epochs)},
        {e: ids for e in range(n_epochs)},
    )


def _leak(y, scores, ids, seed=0):
    report = metrics.label_report(y, scores, None, n_classes=2)
    folded = metrics.label_leak(report["auc_per_epoch"], report["epochs"])
    chance = metrics.label_chance(y, scores, ids, n_classes=2, seed=seed)
    return folded["auc_folded_max"], chance, metrics.label_leak_of(folded["auc_folded_max"], chance)


def test_a_random_attack_leaks_nothing_and_a_perfect_one_everything():
    y, noise, ids = _epochs(30, 300, lambda y, g: torch.randn(len(y), generator=g))
    worst, chance, leak = _leak(y, noise, ids)
    # reference: the worst-of-30-epochs folded AUC of fresh random attacks, simulated directly
    gen = torch.Generator().manual_seed(9)
    sims = [
        max(metrics.fold_auc(metrics.label_auc(y[0], torch.randn(300, generator=gen),
                                               n_classes=2)) for _ in range(30))
        for _ in range(40)
    ]  # fmt: skip
    assert chance == pytest.approx(np.mean(sims), abs=0.015) and chance > 0.55
    assert leak < 0.1
    _, perfect, _ = _epochs(30, 300, lambda y, g: 0.01 * torch.randn(len(y), generator=g) - y)
    worst, chance, leak = _leak(y, perfect, ids)
    assert worst == 1.0 and chance < 0.65 and leak == 1.0


def test_chance_is_seeded_and_respects_scores_that_stay_alike_over_epochs():
    y, noise, ids = _epochs(30, 300, lambda y, g: torch.randn(len(y), generator=g))
    a = metrics.label_chance(y, noise, ids, n_classes=2, seed=0)
    assert a == metrics.label_chance(y, noise, ids, n_classes=2, seed=0)
    assert a != metrics.label_chance(y, noise, ids, n_classes=2, seed=1)
    frozen = {e: noise[0] for e in noise}  # the same ranking every epoch: no best-of-30 luck
    alike = metrics.label_chance(y, frozen, ids, n_classes=2, seed=0)
    assert alike < a - 0.03


def test_chance_of_a_one_class_epoch_set_is_none():
    y = {0: torch.zeros(10, dtype=torch.long)}
    scores, ids = {0: torch.rand(10)}, {0: torch.arange(10)}
    assert metrics.label_chance(y, scores, ids, n_classes=2, seed=0) is None
    assert metrics.label_leak_of(None, None) is None
