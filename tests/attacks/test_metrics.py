"""Leakage metrics against hand computations, sklearn and torchmetrics' class API."""

import math

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torchmetrics.image import StructuralSimilarityIndexMeasure

from nopeek import distance_correlation
from nopeek.attacks import metrics
from nopeek.attacks.leak import Columns
from nopeek.errors import ConfigError


def _images(n=6, seed=0):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_mse_is_exact():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    x_hat = torch.tensor([[1.0, 1.0], [2.0, 1.0]])
    assert metrics.mse(x, x_hat) == pytest.approx((1 + 0 + 0 + 4) / 4)


def test_psnr_is_the_per_sample_average_by_hand():
    x = torch.zeros(2, 1, 2, 2)
    x_hat = torch.stack([torch.full((1, 2, 2), 0.1), torch.full((1, 2, 2), 0.5)])
    by_hand = (10 * math.log10(2.0**2 / 0.1**2) + 10 * math.log10(2.0**2 / 0.5**2)) / 2
    assert metrics.psnr(x, x_hat, data_range=2.0) == pytest.approx(by_hand, rel=1e-6)


def test_psnr_of_an_exact_reconstruction_is_capped_not_infinite():
    x = _images()
    assert metrics.psnr(x, x.clone(), data_range=1.0) == pytest.approx(metrics.PSNR_CAP_DB)


def test_ssim_of_identical_images_is_one_and_drops_with_noise():
    x = _images()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    values = [metrics.ssim(x, x + s * noise, data_range=1.0) for s in (0.0, 0.05, 0.2)]
    assert values[0] == pytest.approx(1.0, abs=1e-9)
    assert values[0] > values[1] > values[2]


def test_ssim_of_constant_images_is_the_luminance_term_by_hand():
    # constant images have no variance, so SSIM = (2 a b + C1) / (a^2 + b^2 + C1)
    a, b = 0.2, 0.6
    c1 = (metrics.SSIM_K[0] * 1.0) ** 2
    by_hand = (2 * a * b + c1) / (a * a + b * b + c1)
    x, x_hat = torch.full((2, 1, 8, 8), a), torch.full((2, 1, 8, 8), b)
    assert metrics.ssim(x, x_hat, data_range=1.0) == pytest.approx(by_hand, rel=1e-6)


@pytest.mark.parametrize("shape", [(4, 1, 8, 8), (3, 3, 32, 32)])
def test_ssim_matches_torchmetrics_class_api(shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(2)).double()
    x_hat = (x + 0.1 * torch.randn(shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    sigma = metrics.ssim_sigma(shape[1:])
    reference = StructuralSimilarityIndexMeasure(data_range=1.0, sigma=sigma)
    reference.update(x_hat, x)
    assert metrics.ssim(x, x_hat, data_range=1.0) == pytest.approx(float(reference.compute()))


def test_ssim_window_fits_small_images():
    assert metrics.ssim_sigma((1, 8, 8)) == 0.5  # a 5x5 window on 8x8 digits
    assert metrics.ssim_sigma((3, 32, 32)) == 1.5  # the standard 11x11 window


def test_ssim_is_undefined_for_tabular_rows():
    x = torch.randn(5, 30)
    assert metrics.ssim(x, x, data_range=3.0) is None
    report = metrics.reconstruction_report(x, x, x * 0, data_range=3.0, columns=Columns.of(x))
    assert report["ssim"] is None and report["baseline_ssim"] is None
    assert report["mse"] == 0.0 and report["leak"] == 1.0 and report["r2"] == 1.0
    with pytest.raises(ConfigError, match="columns=Columns.of"):
        metrics.reconstruction_report(x, x, x * 0, data_range=3.0)


def test_baseline_is_the_aux_mean_repeated():
    aux = _images(10, seed=4)
    base = metrics.baseline_reconstruction(aux, 3)
    assert base.shape == (3, 1, 8, 8)
    for row in base:
        assert torch.allclose(row, aux.mean(0))


def test_report_compares_with_the_baseline_and_dcor():
    x = _images(20, seed=5)
    x_hat = 2 * x + 1  # a perfect reconstruction up to an affine map: dCor 1
    base = metrics.baseline_reconstruction(_images(30, seed=6), len(x))
    report = metrics.reconstruction_report(x, x.clone(), base, data_range=1.0)
    assert set(report) == {
        "ssim",
        "psnr",
        "mse",
        "baseline_ssim",
        "baseline_psnr",
        "baseline_mse",
        "dcor_reconstruction",
        "data_range",
        "leak",
    }
    assert report["ssim"] > report["baseline_ssim"] and report["mse"] < report["baseline_mse"]
    affine = metrics.reconstruction_report(x, x_hat, base, data_range=1.0)
    expected = float(distance_correlation(x.double(), x_hat.double()))
    assert affine["dcor_reconstruction"] == pytest.approx(expected)
    assert affine["dcor_reconstruction"] == pytest.approx(1.0)


def test_shape_mismatch_is_a_one_line_error():
    with pytest.raises(ConfigError, match="one reconstruction per sample"):
        metrics.mse(torch.zeros(3, 4), torch.zeros(2, 4))


def test_binary_auc_matches_sklearn():
    gen = torch.Generator().manual_seed(7)
    y = torch.randint(0, 2, (50,), generator=gen)
    s = y.double() + torch.randn(50, generator=gen, dtype=torch.float64)
    assert metrics.label_auc(y, s, n_classes=2) == pytest.approx(roc_auc_score(y, s))
    two_col = torch.stack([-s, s], 1)
    assert metrics.label_auc(y, two_col, n_classes=2) == pytest.approx(roc_auc_score(y, s))


def test_multiclass_auc_is_the_macro_one_vs_rest_average():
    gen = torch.Generator().manual_seed(8)
    y = torch.arange(60) % 3
    raw = torch.randn(60, 3, generator=gen, dtype=torch.float64)
    raw[torch.arange(60), y] += 1.0
    per_class = [roc_auc_score((y == k).int(), raw[:, k]) for k in range(3)]
    assert metrics.label_auc(y, raw, n_classes=3) == pytest.approx(sum(per_class) / 3)
    prob = raw.softmax(1)
    ovr = roc_auc_score(y, prob, multi_class="ovr", average="macro")
    assert metrics.label_auc(y, prob, n_classes=3) == pytest.approx(ovr)


def test_auc_of_a_single_class_is_none_and_bad_shapes_raise():
    assert metrics.label_auc(torch.zeros(5, dtype=torch.long), torch.rand(5), n_classes=2) is None
    with pytest.raises(ConfigError, match="one-vs-rest"):
        metrics.label_auc(torch.arange(6) % 3, torch.rand(6), n_classes=3)


def test_label_report_scores_the_final_epoch_and_aligns_permuted_classes():
    y = torch.arange(30) % 3
    onehot = torch.nn.functional.one_hot(y, 3).double()
    perm = torch.tensor([2, 0, 1])  # the attacker's class c is true class perm[c]
    scores = onehot[:, perm]  # column c scores true class perm[c]
    predicted = torch.argsort(perm)[y]
    plain = metrics.label_report(
        {0: y, 1: y},
        {0: torch.rand(30, 3, dtype=torch.float64), 1: scores},
        {1: predicted},
        n_classes=3,
    )
    assert plain["epochs"] == [0, 1] and plain["accuracy"] < 1.0
    aligned = metrics.label_report(
        {1: y}, {1: scores}, {1: predicted}, n_classes=3, up_to_permutation=True
    )
    assert aligned["auc"] == pytest.approx(1.0) and aligned["accuracy"] == 1.0
    assert aligned["n_samples"] == 30


@pytest.mark.parametrize("two_columns", [False, True])
@pytest.mark.parametrize("ties", [False, True])
def test_the_chance_baselines_rank_sum_aucs_equal_sklearns(two_columns, ties):
    """label_chance scores all permutations of an epoch from one ranking: sklearn's
    roc_auc_score on each labelling (tied scores too), None where a labelling has one class."""
    from sklearn.metrics import roc_auc_score

    from nopeek.attacks.label_metrics import _binary_aucs

    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(50, 2, generator=gen) if two_columns else torch.randn(50, generator=gen)
    if ties:
        scores = (scores * 2).round()  # a handful of distinct values
    ys = [(torch.rand(50, generator=gen) < 0.3).long() for _ in range(6)]
    ys.insert(2, torch.ones(50, dtype=torch.long))  # one class
    s = (scores[:, 1] if two_columns else scores).double().numpy()
    got = _binary_aucs(ys, scores)
    assert got[2] is None
    for y, auc in zip(ys[:2] + ys[3:], got[:2] + got[3:]):
        assert auc == pytest.approx(roc_auc_score(y.numpy(), s), abs=1e-12)
    assert _binary_aucs(ys[2:3], scores) == [None]
