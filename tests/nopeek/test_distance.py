"""Tests for nopeek.distance (against the ``dcor`` reference) and nopeek.regularizers."""

from __future__ import annotations

import dcor
import numpy as np
import pytest
import torch
from torch import nn

from nopeek.distance import (
    _pairwise_distances,
    distance_correlation,
    u_distance_correlation_sqr,
)
from nopeek.errors import ConfigError, DataError
from nopeek.regularizers import NoPeekLoss, nopeek_penalty

ATOL = 1e-6


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Named (x, z) float64 pairs: x (N, ...), z (N, ...)."""
    g = _rng(0)
    x = g.normal(size=(40, 6))
    img = g.uniform(size=(24, 3, 8, 8))
    return {
        "independent": (x, g.normal(size=(40, 3))),
        "dependent": (x, np.tanh(x[:, :2] ** 2 - x[:, 2:4]) + 0.05 * g.normal(size=(40, 2))),
        "image_vs_2d": (img, np.sin(img.reshape(24, -1) @ g.normal(size=(192, 5)))),
        "diff_dims_1d": (g.normal(size=(30, 1)), g.normal(size=(30, 17))),
        "x_constant": (np.full((20, 4), 0.3), g.normal(size=(20, 3))),
        "z_constant": (g.normal(size=(20, 4)), np.full((20, 2), -7.1)),
        "both_constant": (np.ones((10, 2)), np.zeros((10, 3))),
        "duplicated_rows": (np.repeat(x[:10], 3, axis=0), np.repeat(x[:10, :2] ** 2, 3, axis=0)),
    }


def _t(a: np.ndarray, **kw: object) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64, **kw)


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], -1)


@pytest.mark.parametrize("name", list(_pairs()))
def test_biased_matches_dcor(name: str) -> None:
    x, z = _pairs()[name]
    ours = distance_correlation(_t(x), _t(z)).item()
    ref = float(dcor.distance_correlation(_flat(x), _flat(z)))
    assert ours == pytest.approx(ref, abs=ATOL)


@pytest.mark.parametrize("name", list(_pairs()))
def test_unbiased_matches_dcor(name: str) -> None:
    x, z = _pairs()[name]
    ours = u_distance_correlation_sqr(_t(x), _t(z)).item()
    ref = float(dcor.u_distance_correlation_sqr(_flat(x), _flat(z)))
    assert ours == pytest.approx(ref, abs=ATOL)


@pytest.mark.parametrize("fn", [distance_correlation, u_distance_correlation_sqr])
def test_constant_input_is_exactly_zero(fn) -> None:
    z = torch.randn(16, 3, dtype=torch.float64)
    x = torch.full((16, 2, 2), 0.1, dtype=torch.float64)
    assert fn(x, z).item() == 0.0
    assert fn(z, x).item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pairwise_distances_exact_diagonal_and_close_to_cdist(dtype: torch.dtype) -> None:
    x = 5.0 + 3.0 * torch.randn(50, 300, dtype=dtype)
    d = _pairwise_distances(x)
    assert torch.all(d.diagonal() == 0)
    ref = torch.cdist(x.double(), x.double(), compute_mode="donot_use_mm_for_euclid_dist")
    assert torch.allclose(d.double(), ref, rtol=1e-5 if dtype == torch.float32 else 1e-12)


def test_unbiased_can_be_negative_and_is_small_when_independent() -> None:
    g = torch.Generator().manual_seed(1)
    x, z = torch.randn(64, 500, generator=g), torch.randn(64, 300, generator=g)
    biased = distance_correlation(x, z).item()
    unbiased = u_distance_correlation_sqr(x, z).item()
    assert biased > 0.8  # strongly inflated for small N in high dimension
    assert abs(unbiased) < 0.05
    x5 = torch.arange(5.0).unsqueeze(1)
    assert u_distance_correlation_sqr(x5, (x5 - 2) ** 2).item() < 0


@pytest.mark.parametrize("seed", range(5))
def test_range_and_self_correlation(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 7, generator=g, dtype=torch.float64)
    z = torch.randn(32, 4, generator=g, dtype=torch.float64) + x[:, :4] * seed
    value = distance_correlation(x, z).item()
    assert 0.0 <= value <= 1.0
    assert distance_correlation(x, x).item() == pytest.approx(1.0, abs=1e-12)
    assert u_distance_correlation_sqr(x, x).item() == pytest.approx(1.0, abs=1e-12)


def test_invariance_to_scale_translation_rotation() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(50, 6, generator=g, dtype=torch.float64)
    z = torch.tanh(x[:, :3]) + 0.3 * torch.randn(50, 3, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    x2 = 3.7 * x @ q + 11.0
    z2 = 0.01 * z - 4.0
    for fn in (distance_correlation, u_distance_correlation_sqr):
        assert fn(x2, z2).item() == pytest.approx(fn(x, z).item(), abs=1e-10)


def test_float32_close_to_float64() -> None:
    x, z = _pairs()["image_vs_2d"]
    for fn in (distance_correlation, u_distance_correlation_sqr):
        single = fn(torch.tensor(x, dtype=torch.float32), torch.tensor(z, dtype=torch.float32))
        assert single.dtype == torch.float32
        assert single.item() == pytest.approx(fn(_t(x), _t(z)).item(), abs=1e-4)


def test_integer_input_is_cast_to_float() -> None:
    x = torch.randint(0, 256, (12, 1, 4, 4), dtype=torch.uint8)
    z = torch.randn(12, 5)
    assert distance_correlation(x, z).item() == pytest.approx(
        distance_correlation(x.float(), z).item(), abs=1e-6
    )


def test_gradcheck_distinct_rows() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    z = torch.randn(7, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(distance_correlation, (x, z))
    assert torch.autograd.gradcheck(u_distance_correlation_sqr, (x, z))
    assert torch.autograd.gradgradcheck(distance_correlation, (x, z))


@pytest.mark.filterwarnings("ignore:Anomaly Detection has been enabled")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fn", [distance_correlation, u_distance_correlation_sqr])
def test_finite_gradients_with_duplicates(fn, dtype: torch.dtype) -> None:
    base = torch.randn(8, 5, dtype=dtype)
    duplicated = torch.cat([base, base[:3]]).requires_grad_(True)
    identical = base[:1].repeat(11, 1).requires_grad_(True)
    z = torch.randn(11, 4, dtype=dtype, requires_grad=True)
    for x in (duplicated, identical):
        with torch.autograd.detect_anomaly():  # no NaN/inf even in intermediate gradients
            fn(x, z).backward()
        assert torch.isfinite(x.grad).all() and torch.isfinite(z.grad).all()
        fn(x, x.detach() ** 2).backward()  # duplicates in both inputs
        assert torch.isfinite(x.grad).all()
    assert identical.grad.abs().max().item() == 0.0  # a constant batch has dCor 0 everywhere


def test_too_few_or_mismatched_samples_raise() -> None:
    with pytest.raises(ValueError, match="at least 2 samples"):
        distance_correlation(torch.randn(1, 3), torch.randn(1, 2))
    with pytest.raises(ConfigError, match="at least 4 samples"):
        u_distance_correlation_sqr(torch.randn(3, 3), torch.randn(3, 2))
    with pytest.raises(ConfigError, match="same number of samples"):
        distance_correlation(torch.randn(5, 3), torch.randn(6, 2))


def test_minimizing_dcor_by_gradient_descent_lowers_it() -> None:
    """z = W x + noise: Adam on W drives dCor(x, z) down to about dCor(x, noise)."""
    torch.manual_seed(4)
    x, noise = torch.randn(64, 8), torch.randn(64, 4)
    linear = nn.Linear(8, 4, bias=False)
    with torch.no_grad():
        linear.weight.mul_(5.0)  # start strongly dependent
    opt = torch.optim.Adam(linear.parameters(), lr=0.05)

    def loss() -> torch.Tensor:
        return distance_correlation(x, linear(x) + noise)

    start = loss().item()
    for _ in range(200):
        opt.zero_grad()
        loss().backward()
        opt.step()
    end = loss().item()
    floor = distance_correlation(x, noise).item()
    assert start > 0.75
    assert end < 0.65 * start
    assert end < floor + 0.05


# ----------------------------------------------------------------------------- NoPeekLoss


def _batch(seed: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """inputs (16, 1, 4, 4), activations (16, 8), logits (16, 3), labels (16,), float64."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.rand(16, 1, 4, 4, generator=g, dtype=torch.float64)
    acts = torch.relu(inputs.flatten(1) @ torch.randn(16, 8, generator=g, dtype=torch.float64))
    logits = torch.randn(16, 3, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (16,), generator=g)
    return inputs, acts.requires_grad_(True), logits, labels


def test_negative_alpha_raises() -> None:
    with pytest.raises(ConfigError, match=r"alpha must be >= 0, got -1; pass --alpha 0"):
        NoPeekLoss(alpha=-1)
    with pytest.raises(ConfigError, match="alpha must be >= 0"):
        nopeek_penalty(torch.randn(4, 2), torch.randn(4, 2), alpha=-0.5)
    with pytest.raises(TypeError):
        NoPeekLoss(0.5)  # type: ignore[misc]  # alpha is keyword-only


def test_alpha_zero_equals_cross_entropy_exactly() -> None:
    inputs, acts, logits, labels = _batch()
    loss = NoPeekLoss(alpha=0.0)(logits, labels, inputs=inputs, activations=acts)
    assert torch.equal(loss, nn.functional.cross_entropy(logits, labels))
    assert nopeek_penalty(inputs, acts, alpha=0).item() == 0.0


def test_alpha_positive_equals_reference() -> None:
    inputs, acts, logits, labels = _batch()
    alpha = 0.7
    second = acts.detach() ** 2
    loss = NoPeekLoss(alpha=alpha)(logits, labels, inputs=inputs, activations=[acts, second])
    x = inputs.flatten(1).numpy()
    ref_dcor = sum(dcor.distance_correlation(x, a.detach().numpy()) for a in (acts, second))
    ref = nn.functional.cross_entropy(logits, labels).item() + alpha * ref_dcor
    assert loss.item() == pytest.approx(ref, abs=ATOL)


def test_gradients_flow_to_activations_only() -> None:
    inputs, acts, logits, labels = _batch()
    inputs.requires_grad_(True)
    NoPeekLoss(alpha=1.0)(logits, labels, inputs=inputs, activations=acts).backward()
    assert acts.grad is not None and acts.grad.abs().sum().item() > 0
    assert inputs.grad is None


def test_custom_task_loss_and_empty_activations() -> None:
    inputs, acts, logits, _ = _batch()
    target = torch.zeros_like(logits)
    loss_fn = NoPeekLoss(alpha=0.0, task_loss=nn.MSELoss())
    loss = loss_fn(logits, target, inputs=inputs, activations=acts)
    assert loss.item() == pytest.approx((logits**2).mean().item())
    with pytest.raises(ConfigError, match="activations is empty"):
        nopeek_penalty(inputs, [], alpha=1.0)


# ------------------------------------------------------------- scale, non-finite, tiny batches


@pytest.mark.parametrize("scale", [1e-35, 1e-20, 1e-10, 1e10, 1e20, 1e35])
def test_float32_value_and_gradient_unchanged_at_extreme_scales(scale: float) -> None:
    """x * 1e20 in float32 used to overflow the Gram matrix (dCor 0), x * 1e-20 to underflow."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(32, 5, generator=g)
    z = torch.tanh(x[:, :2]) + 0.3 * torch.randn(32, 2, generator=g)
    ref = x.double().numpy(), z.double().numpy()
    for fn, dcor_fn in (
        (distance_correlation, dcor.distance_correlation),
        (u_distance_correlation_sqr, dcor.u_distance_correlation_sqr),
    ):
        scaled = (x.double() * scale).float().requires_grad_(True)
        plain = x.clone().requires_grad_(True)
        value = fn(scaled, z)
        assert value.item() == pytest.approx(float(dcor_fn(*ref)), abs=1e-5)
        assert fn(scaled, scaled).item() == pytest.approx(1.0, abs=1e-6)
        value.backward()
        fn(plain, z).backward()
        assert torch.isfinite(scaled.grad).all()
        assert torch.allclose(
            scaled.grad.double() * scale, plain.grad.double(), rtol=1e-3, atol=1e-5
        )


def test_large_offset_with_tiny_spread_in_float32() -> None:
    """A constant offset of 1 with a spread of 1e-20 in another column: translation is removed
    before the second rescaling, so nothing underflows."""
    g = torch.Generator().manual_seed(7)
    spread = torch.randn(20, 2, generator=g)
    x = torch.cat([torch.ones(20, 1), 1e-20 * spread], dim=1)
    z = spread**2
    assert distance_correlation(x, x).item() == pytest.approx(1.0, abs=1e-6)
    assert distance_correlation(x, z).item() == pytest.approx(
        distance_correlation(spread.double(), z.double()).item(), abs=1e-5
    )


@pytest.mark.parametrize("fn", [distance_correlation, u_distance_correlation_sqr])
def test_non_finite_input_raises_naming_argument_and_count(fn) -> None:
    x, z = torch.randn(8, 3), torch.randn(8, 2)
    x[0, 1], x[5, 2] = float("nan"), float("inf")
    with pytest.raises(DataError, match=r"got 2 NaN/inf entries in x \(of 24\); dCor is undefined"):
        fn(x, z)
    z[3, 0] = -float("inf")
    with pytest.raises(DataError, match=r"got 1 NaN/inf entries in z \(of 16\)"):
        fn(x.nan_to_num(), z)


def test_nopeek_penalty_is_zero_for_a_batch_of_one_sample() -> None:
    """dCor is undefined for N = 1: the penalty is 0, still in the graph, and training goes on."""
    z = torch.randn(1, 8, requires_grad=True)
    second = torch.randn(1, 4, requires_grad=True)
    penalty = nopeek_penalty(torch.randn(1, 1, 4, 4), [z, second], alpha=0.5)
    assert penalty.item() == 0.0 and penalty.shape == ()
    penalty.backward()
    assert torch.equal(z.grad, torch.zeros_like(z)) and torch.equal(second.grad, torch.zeros(1, 4))
    logits, labels = torch.randn(1, 3), torch.tensor([2])
    loss = NoPeekLoss(alpha=1.0)(logits, labels, inputs=torch.randn(1, 5), activations=z)
    assert loss.item() == nn.functional.cross_entropy(logits, labels).item()
    with pytest.raises(ConfigError, match="same number of samples"):
        nopeek_penalty(torch.randn(1, 3), torch.randn(2, 3), alpha=0.5)
