"""Property tests (hypothesis) for nopeek.distance: range, identity, symmetry, invariances, dcor.

Inputs are either arbitrary finite float arrays (any magnitudes, duplicates, constant columns:
for the properties that hold for every input) or seeded random batches with a tunable dependence
between x and z (for the comparisons that need well-conditioned data).
"""

from __future__ import annotations

import dcor
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nopeek.distance import distance_correlation, u_distance_correlation_sqr
from nopeek.errors import DataError

FAST = settings(max_examples=30, deadline=None)
DTYPES = {"float32": torch.float32, "float64": torch.float64}
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
MAX_SCALE_EXP = {torch.float32: 18, torch.float64: 30}


@st.composite
def any_batch(draw: st.DrawFn, n: int, dtype: torch.dtype) -> torch.Tensor:
    """(n, D) tensor of arbitrary finite floats of ``dtype``, subnormals and extremes included."""
    width = 32 if dtype == torch.float32 else 64
    dim = draw(st.integers(1, 4))
    elements = st.floats(allow_nan=False, allow_infinity=False, width=width)
    array = draw(hnp.arrays(np.float64 if width == 64 else np.float32, (n, dim), elements=elements))
    return torch.from_numpy(array)


@st.composite
def random_pair(draw: st.DrawFn, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
    """Seeded (x, z): x (N, Dx) normal, z (N, Dz) = coupling * tanh(x W) + noise, N in [4, 24]."""
    dtype = dtype or DTYPES[draw(st.sampled_from(sorted(DTYPES)))]
    n, dx, dz = draw(st.integers(4, 24)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    coupling = draw(st.sampled_from([0.0, 0.3, 1.0, 10.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.normal(size=(n, dx))
    z = coupling * np.tanh(x @ rng.normal(size=(dx, dz))) + rng.normal(size=(n, dz))
    return torch.tensor(x, dtype=dtype), torch.tensor(z, dtype=dtype)


def _scale(data: st.DataObject, dtype: torch.dtype) -> float:
    """A positive scale 10**e, e uniform over the range the dtype holds comfortably."""
    bound = MAX_SCALE_EXP[dtype]
    return 10.0 ** data.draw(st.floats(-bound, bound), label="log10 scale")


@FAST
@given(data=st.data(), n=st.integers(4, 12), dtype=st.sampled_from(list(DTYPES.values())))
def test_range_for_any_finite_input(data: st.DataObject, n: int, dtype: torch.dtype) -> None:
    """0 <= dCor <= 1 and -1 <= U-dCor^2 <= 1 (Cauchy-Schwarz) for *any* finite batches."""
    x, z = data.draw(any_batch(n, dtype), label="x"), data.draw(any_batch(n, dtype), label="z")
    value = distance_correlation(x, z).item()
    assert 0.0 <= value <= 1.0 + TOL[dtype]
    assert abs(u_distance_correlation_sqr(x, z).item()) <= 1.0 + TOL[dtype]


@FAST
@given(data=st.data(), n=st.integers(2, 12), dtype=st.sampled_from(list(DTYPES.values())))
def test_self_correlation_is_one_unless_constant(
    data: st.DataObject, n: int, dtype: torch.dtype
) -> None:
    """dCor(X, X) = 1 for any non-constant batch, whatever its magnitudes; 0 for a constant one."""
    x = data.draw(any_batch(n, dtype), label="x")
    constant = bool((x == x[:1]).all())
    assert distance_correlation(x, x).item() == pytest.approx(0.0 if constant else 1.0, abs=1e-6)


@FAST
@given(pair=random_pair())
def test_self_correlation_unbiased_and_symmetry(pair: tuple[torch.Tensor, ...]) -> None:
    x, z = pair
    tol = TOL[x.dtype]
    assert u_distance_correlation_sqr(x, x).item() == pytest.approx(1.0, abs=tol)
    for fn in (distance_correlation, u_distance_correlation_sqr):
        assert fn(x, z).item() == pytest.approx(fn(z, x).item(), abs=tol)


@FAST
@given(pair=random_pair(), data=st.data())
def test_invariant_to_scale_and_translation(
    pair: tuple[torch.Tensor, ...], data: st.DataObject
) -> None:
    """Each input scaled by its own factor in 1e-18..1e18 (float32) / 1e-30..1e30 (float64) and
    shifted by its own offset gives the same value; only the rounding of ``c * x + t`` differs."""
    x, z = pair
    cx, cz = _scale(data, x.dtype), _scale(data, x.dtype)
    tx = torch.tensor(data.draw(st.floats(-10, 10), label="shift x"), dtype=torch.float64)
    x2 = ((x.double() + tx) * cx).to(x.dtype)
    z2 = (z.double() * cz).to(x.dtype)
    tol = 1e-4 if x.dtype == torch.float32 else 1e-10
    for fn in (distance_correlation, u_distance_correlation_sqr):
        assert fn(x2, z2).item() == pytest.approx(fn(x, z).item(), abs=tol)


@FAST
@given(pair=random_pair(torch.float64), data=st.data())
def test_gradient_is_scale_equivariant(pair: tuple[torch.Tensor, ...], data: st.DataObject):
    """d dCor(c x, z) / d(c x) = (1 / c) d dCor(x, z) / dx: finite and exact at any scale."""
    x, z = pair
    c = _scale(data, x.dtype)
    big = (x * c).requires_grad_(True)
    small = x.clone().requires_grad_(True)
    distance_correlation(big, z).backward()
    distance_correlation(small, z).backward()
    assert torch.isfinite(big.grad).all()
    # Each element is a sum of O(N^2) terms of the gradient's own magnitude, so its rounding error
    # is relative to the largest element, not to itself (an element near 0 cancels them).
    atol = 1e-9 * float(small.grad.abs().max())
    assert torch.allclose(big.grad * c, small.grad, rtol=1e-8, atol=atol)


@FAST
@given(pair=random_pair(torch.float64))
def test_float64_equals_dcor(pair: tuple[torch.Tensor, ...]) -> None:
    """Agreement to 1e-12 (~1e-13 measured). The U-statistic is compared from N = 5 on: at
    N = 4 its centering cancels badly and dcor itself drifts (up to ~1e-7 measured, e.g.
    -0.4999999997 where the exact 60-digit value is -0.5 and ours is -0.5 + 7e-15)."""
    x, z = pair
    xn, zn = x.numpy(), z.numpy()
    ref = dcor.distance_correlation(xn, zn, method="naive")
    assert distance_correlation(x, z).item() == pytest.approx(ref, abs=1e-12)
    if len(x) >= 5:
        ref_u = dcor.u_distance_correlation_sqr(xn, zn, method="naive")
        assert u_distance_correlation_sqr(x, z).item() == pytest.approx(ref_u, abs=1e-11)


@FAST
@given(
    pair=random_pair(),
    where=st.sampled_from(["x", "z"]),
    bad=st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), min_size=1, max_size=3),
    data=st.data(),
)
def test_non_finite_input_raises(pair, where: str, bad: list[float], data: st.DataObject) -> None:
    """Any NaN/inf is refused with a DataError naming the argument and the count."""
    x, z = (t.clone() for t in pair)
    target = x if where == "x" else z
    flat = target.view(-1)
    spots = data.draw(
        st.lists(
            st.integers(0, flat.numel() - 1), min_size=len(bad), max_size=len(bad), unique=True
        )
    )
    flat[spots] = torch.tensor(bad, dtype=flat.dtype)
    for fn in (distance_correlation, u_distance_correlation_sqr):
        with pytest.raises(DataError, match=rf"got {len(bad)} NaN/inf entries in {where} "):
            fn(x, z)
