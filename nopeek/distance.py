"""Distance correlation between two batches, in torch, differentiable and O(N^2) in memory.

Distance correlation (Szekely, Rizzo & Bakirov, 2007) measures *any* statistical dependence
between two random vectors of arbitrary dimensions; it is 0 only under independence (in the
population). NoPeek uses it as a leakage measure between raw inputs ``x`` and the activations
``z`` a client sends over the cut, and as a differentiable penalty to reduce that leakage.

Both estimators here follow the ``dcor`` package exactly (to ~1e-12 in float64), but run on
torch tensors (CPU or GPU, float32 or float64) and support autograd:

* :func:`distance_correlation` -- the usual biased V-statistic dCor in [0, 1], used for training.
* :func:`u_distance_correlation_sqr` -- the bias-corrected (U-centered) squared dCor, used for
  evaluation, because the biased one is strongly inflated for small N in high dimension.

Pairwise distances are computed from the Gram matrix and the squared norms, so memory is
O(N^2) (about 15 ``(N, N)`` buffers at the peak of forward+backward) plus a copy of each input;
the naive ``(N, N, D)`` difference tensor is never built. Each input is first scaled by an
exact power of two (detached) to unit max-abs, so the value is scale-invariant across the whole
range of the dtype (float32 Gram matrices otherwise overflow or underflow, e.g. for ``x * 1e20``
or ``x * 1e-20``); NaN/inf inputs are refused with a :class:`~nopeek.errors.DataError`. The
finiteness check and the scale come from one min/max reduction per input and one host sync for
both, so they cost about two elementwise passes (issue 21).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nopeek.errors import ConfigError, DataError

__all__ = ["distance_correlation", "u_distance_correlation_sqr"]


def _compute_dtype(x: Tensor, z: Tensor) -> torch.dtype:
    """The floating dtype both inputs are cast to: their promotion, at least float32.

    Integer inputs (e.g. ``uint8`` pixels) use the default float dtype; float16/bfloat16 are
    upcast to float32 because the squared-distance formula cancels badly at half precision.
    """
    if x.is_complex() or z.is_complex():
        raise ConfigError("distance correlation needs real tensors, got a complex one; pass .real")
    dtype = torch.promote_types(x.dtype, z.dtype)
    if not dtype.is_floating_point:
        return torch.get_default_dtype()
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return dtype


def _as_pair(x: Tensor, z: Tensor, *, min_samples: int, name: str) -> tuple[Tensor, Tensor]:
    """Check two batches, flatten them per sample and normalize them (:func:`_normalize_pair`).

    x: (N, ...), z: (N, ...) -> (N, Dx), (N, Dz), same floating dtype and device.
    """
    if x.dim() == 0 or z.dim() == 0:
        raise ConfigError(
            f"{name} needs batches with a sample dimension, got a 0-d tensor; "
            "pass tensors of shape (N, ...)"
        )
    if x.shape[0] != z.shape[0]:
        raise ConfigError(
            f"{name} needs the same number of samples in x and z, got "
            f"{x.shape[0]} and {z.shape[0]}; pass matching batches"
        )
    if x.shape[0] < min_samples:
        raise ConfigError(
            f"{name} needs at least {min_samples} samples, got N={x.shape[0]}; "
            f"use a batch size of {min_samples} or more"
        )
    if x.device != z.device:
        raise ConfigError(
            f"{name} got x on {x.device} and z on {z.device}; move both to the same device"
        )
    dtype = _compute_dtype(x, z)
    n = x.shape[0]
    return _normalize_pair(x.reshape(n, -1).to(dtype), z.reshape(n, -1).to(dtype), name=name)


def _check_finite(x: Tensor, z: Tensor, *, name: str) -> None:
    """Raise ``DataError`` naming the argument that holds NaN/inf, and how many entries.

    x: (N, Dx), z: (N, Dz). Non-finite values would propagate into every centered distance and
    make the ratio NaN (formerly reported as 0, "independent"). Counts entries, so it runs only
    once :func:`_normalize_pair` has seen a non-finite extreme (the refusal path, not every call).
    """
    counts = torch.stack([(~torch.isfinite(t)).sum() for t in (x, z)]).tolist()
    for arg, t, count in zip(("x", "z"), (x, z), counts):
        if count:
            raise DataError(
                f"{name} got {count} NaN/inf entries in {arg} (of {t.numel()}); dCor is "
                "undefined for non-finite data: drop or impute them (if they are activations "
                "that diverged, lower the learning rate)"
            )


def _pow2_scale(x: Tensor) -> Tensor:
    """``x`` times the power of two that brings ``max |x|`` into [0.5, 1); all zeros unchanged.

    x: (N, D) -> (N, D). The factor is applied as two powers of two, each representable for any
    exponent of the dtype, so the product is exact (barring subnormal entries). It is detached.
    """
    if x.numel() == 0:
        return x
    _, exponent = torch.frexp(x.detach().abs().amax())
    low = torch.div(exponent, 2, rounding_mode="floor")
    return x * torch.exp2(-low.to(x.dtype)) * torch.exp2((low - exponent).to(x.dtype))


def _normalize(x: Tensor) -> Tensor:
    """``x`` with its first sample subtracted, scaled by a power of two to max-abs in [0.5, 1).

    x: (N, D) -> (N, D), same pairwise distances up to one positive factor. dCor is invariant
    to translating and scaling either input, but the Gram formula is not: in float32,
    ``x @ x.T`` and the products of squared dVars overflow for entries above about 1e9 and
    underflow below about 1e-10, which made dCor come out 0. So ``x`` is scaled into range
    (first, so that subtracting cannot overflow), translated, and scaled again (so a large
    offset with a tiny spread cannot underflow either). Powers of two commute exactly with
    every later step, so inputs that were already in range give bit-for-bit the same result.

    The factors are detached, and that is exact, not an approximation: dCor is homogeneous of
    degree 0 in ``x``, so its derivative along ``x`` (the only direction a factor moves) is 0
    by Euler's theorem; the gradient is the chain rule through ``x * factor`` alone, i.e.
    ``factor`` times the gradient at the scaled input. It is finite while ``1 / max |x - x_0|``
    is (any normal float32 scale).
    """
    x = _pow2_scale(x)
    return _pow2_scale(x - x[:1])


def _extremes(y: Tensor) -> Tensor:
    """``[min(y), max(y)]`` in one fused pass, NaN if ``y`` holds one; ``[0, 0]`` if empty.

    y: (N, D) -> (2,), detached.
    """
    if y.numel() == 0:
        return y.new_zeros(2)
    return torch.stack(torch.aminmax(y.detach()))


def _normalize_pair(x: Tensor, z: Tensor, *, name: str) -> tuple[Tensor, Tensor]:
    """Both inputs as :func:`_normalize` makes them, NaN/inf refused, with one host sync for both.

    x: (N, Dx), z: (N, Dz) -> (N, Dx), (N, Dz): first sample exactly 0, max-abs in [0.5, 1).

    The hot path takes ``y = x - x_0`` and its min and max (one fused reduction, into which any
    NaN/inf propagates) for both inputs, fetched together, and multiplies ``y`` by ``2^-e`` for
    ``max |y| = m 2^e`` with ``m`` in [0.5, 1): the same values as :func:`_normalize` (powers of
    two commute with rounding, barring subnormal entries) in two elementwise passes instead of
    ten, and no separate finiteness pass. A non-finite extreme means NaN/inf in the input
    (refused by :func:`_check_finite`, which counts them) or an overflow of ``x - x_0`` (entries
    near the dtype's max); that, and a factor ``2^-e`` outside the normal range (a spread in the
    subnormal range), take the two-stage :func:`_normalize`.

    ``x_0`` is detached, exactly as the scale factors are: dCor is invariant to translation, so
    the gradient along ``x_0`` (minus the sum of the per-sample gradients) is 0.
    """
    shifted = [t - t[:1].detach() for t in (x, z)]
    extremes: list[float] = torch.cat([_extremes(y) for y in shifted]).tolist()  # the one sync
    if not all(math.isfinite(v) for v in extremes):
        _check_finite(x, z, name=name)  # raises if the inputs hold NaN/inf
    info = torch.finfo(x.dtype)
    out = []
    for t, y, low, high in zip((x, z), shifted, extremes[::2], extremes[1::2]):
        spread = max(-low, high)  # y_0 = 0, so low <= 0 <= high
        if spread == 0.0:
            out.append(y)
            continue
        normal = info.tiny <= spread <= info.max  # else subnormal, or x - x_0 overflowed
        factor = math.ldexp(1.0, -math.frexp(spread)[1]) if normal else math.inf
        out.append(y * factor if info.tiny <= factor <= info.max else _normalize(t))
    return out[0], out[1]


def _safe_sqrt(t: Tensor, keep: Tensor, eps: Tensor | float) -> Tensor:
    """``sqrt(t)`` where ``keep``, exactly 0 elsewhere, with a finite gradient everywhere.

    t: (...), keep: (...) bool. The sqrt is taken of ``t`` clamped at ``eps`` where not
    ``keep``, so no infinite slope (``sqrt`` at 0) or NaN ever appears, even in intermediate
    gradients (safe under ``torch.autograd.detect_anomaly``); dropped entries get gradient 0.
    Used on scalars: ``torch.where`` on large bool masks is slow on CPU.
    """
    return torch.where(keep, torch.where(keep, t, eps).sqrt(), 0.0)


class _Gram(torch.autograd.Function):
    """``x @ x.T`` whose backward is one matmul, ``(g + g.T) @ x``, instead of autograd's two.

    x: (N, D) -> (N, N). Twice differentiable (the backward is built from autograd ops).
    """

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return x @ x.mT

    @staticmethod
    def setup_context(
        ctx: torch.autograd.function.FunctionCtx, inputs: tuple[Tensor], output: Tensor
    ) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx: torch.autograd.function.BackwardCFunction, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return (grad + grad.mT) @ x


def _pairwise_distances(x: Tensor) -> Tensor:
    """Euclidean distance matrix of any ``x``: :func:`_gram_distances` of ``x - x_0``.

    x: (N, D) -> (N, N). The first sample is subtracted first: distances do not change, the
    numbers get smaller (less cancellation), and a constant batch becomes exactly 0, so it gives
    exactly zero distances (and dCor exactly 0). :func:`_normalize_pair` has done that already.
    """
    return _gram_distances(x - x[:1])


def _gram_distances(x: Tensor) -> Tensor:
    """Euclidean distance matrix from the Gram matrix, without an (N, N, D) buffer.

    x: (N, D) -> (N, N), with an exactly zero diagonal; best with ``x_0 = 0``.

    ``d2_ij = G_ii + G_jj - 2 G_ij`` with ``G = x x^T``: the squared norms are the Gram
    diagonal, so the diagonal of ``d2`` is exactly 0 in floating point (``2a - 2a``) and one
    matmul serves both forward and backward.

    The sqrt is taken as ``sqrt(max(d2, 0) + eps) - sqrt(eps)``: exactly 0 at ``d2 = 0``, slope
    at most ``1 / (2 sqrt(eps))``, so gradients stay finite for duplicated samples. With
    ``eps = (machine epsilon)^2 * max_i |x_i|^2`` the shift ``sqrt(eps)`` is one rounding unit
    of the largest norm, below the rounding noise of the Gram formula itself. (A clamp plus a
    mask would do the same, but ``torch.where`` on (N, N) bool masks is slow on CPU.)
    """
    gram: Tensor = _Gram.apply(x)
    sq = gram.diagonal()
    d2 = torch.sub(sq.unsqueeze(1) + sq, gram, alpha=2.0).relu()
    info = torch.finfo(x.dtype)
    eps = (info.eps**2 * sq.detach().max()).clamp(min=info.tiny)
    return (d2 + eps).sqrt() - eps.sqrt()


def _centered_distances(x: Tensor, *, unbiased: bool) -> Tensor:
    """Double-centered (``unbiased=False``) or U-centered (``unbiased=True``) distance matrix.

    x: (N, D), normalized by :func:`_normalize_pair` -> (N, N). Double centering subtracts row
    and column means and adds the grand mean; U-centering (Szekely & Rizzo, 2014) divides the
    sums by ``N - 2`` and ``(N - 1)(N - 2)`` instead and zeroes the diagonal, which makes the
    inner product unbiased.
    The distance matrix is symmetric (up to rounding), so column means are the row means.
    """
    d = _gram_distances(x)
    n = d.shape[0]
    if not unbiased:
        rows = d.mean(dim=1)
        return d - (rows.unsqueeze(1) + rows - rows.mean())
    rows = d.sum(dim=1) / (n - 2)
    total = rows.sum() / (n - 1)  # = d.sum() / ((n - 1)(n - 2))
    return (d - (rows.unsqueeze(1) + rows - total)).fill_diagonal_(0.0)


def _inner(a: Tensor, b: Tensor, *, unbiased: bool) -> Tensor:
    """Squared distance covariance from two centered matrices: (N, N), (N, N) -> ().

    V-statistic ``sum(a * b) / N^2``, or U-statistic ``sum(a * b) / (N (N - 3))`` (the
    U-centered diagonal is 0, so the sum runs over i != j).
    """
    n = a.shape[0]
    return torch.dot(a.reshape(-1), b.reshape(-1)) / (n * (n - 3) if unbiased else n * n)


def _correlation_sqr(x: Tensor, z: Tensor, *, unbiased: bool) -> Tensor:
    """Squared distance correlation ``dCov^2(x, z) / sqrt(|dVar^2(x) dVar^2(z)|)``; 0 if the
    denominator is 0 (as ``dcor`` does), e.g. for a constant batch.

    x: (N, Dx), z: (N, Dz) -> ().
    """
    a = _centered_distances(x, unbiased=unbiased)
    b = _centered_distances(z, unbiased=unbiased)
    cov = _inner(a, b, unbiased=unbiased)
    denom_sqr = (_inner(a, a, unbiased=unbiased) * _inner(b, b, unbiased=unbiased)).abs()
    nonzero = denom_sqr > 0
    safe_denom = torch.where(nonzero, denom_sqr, 1.0).sqrt()
    return torch.where(nonzero, cov / safe_denom, 0.0)


def distance_correlation(x: Tensor, z: Tensor) -> Tensor:
    """Sample distance correlation dCor(x, z) in [0, 1] (biased V-statistic, as ``dcor``).

    Equals ``dcor.distance_correlation(x.flatten(1), z.flatten(1))`` -- note: dCor itself, not
    its square. ``dCor = sqrt(dCov^2(x, z) / sqrt(dVar^2(x) dVar^2(z)))`` with double-centered
    Euclidean distance matrices. It is 0 when either batch is constant, 1 for ``z = x`` and
    invariant to scaling (by any factor the dtype can hold), translation and rotation of either
    input. For small N in high dimension it is biased upwards even for independent data (use
    :func:`u_distance_correlation_sqr` to *measure* leakage); it is the one NoPeek trains with.

    Differentiable in both inputs; gradients stay finite for duplicated samples and constant
    batches. Values below ``sqrt(machine epsilon)`` (3e-4 in float32, 1.5e-8 in float64) are
    returned as exactly 0, where the slope of the final sqrt would blow up. Cost:
    O(N^2 (Dx + Dz)) time, O(N^2 + N (Dx + Dz)) memory. Runs on the inputs' device; integer
    inputs are cast to the default float dtype, half precision to float32.

    Args:
        x: (N, ...) first batch, flattened per sample to (N, Dx).
        z: (N, ...) second batch, flattened per sample to (N, Dz).

    Returns:
        (), a scalar tensor in [0, 1].

    Raises:
        ConfigError: (a ``ValueError``) if N < 2 or the batch sizes differ.
        DataError: (a ``ValueError``) if x or z holds NaN/inf (the message says which, how many).

    >>> x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    >>> float(distance_correlation(x, 2 * x + 1))
    1.0
    >>> round(float(distance_correlation(x, (x - 1.5) ** 2)), 4)
    0.5266
    """
    x, z = _as_pair(x, z, min_samples=2, name="distance_correlation")
    dcor_sqr = _correlation_sqr(x, z, unbiased=False)
    eps = torch.finfo(x.dtype).eps
    return _safe_sqrt(dcor_sqr, dcor_sqr > eps, eps)


def u_distance_correlation_sqr(x: Tensor, z: Tensor) -> Tensor:
    """Bias-corrected squared distance correlation (U-centered, as ``dcor``).

    Equals ``dcor.u_distance_correlation_sqr(x.flatten(1), z.flatten(1))``. Unlike the biased
    :func:`distance_correlation`, its numerator is an unbiased estimate of dCov^2, so it stays
    near 0 for independent data at any N and dimension: it is the estimator to *report*
    leakage with. It is a squared quantity but **can be negative** (it fluctuates around 0 for
    independent data, more so for small N); do not take its square root. Returns 0 when the
    denominator ``sqrt(|dVar^2(x) dVar^2(z)|)`` is 0 (e.g. a constant batch), as ``dcor``
    does. Differentiable; see :func:`distance_correlation` for cost, devices and dtypes.

    Args:
        x: (N, ...) first batch, N >= 4, flattened per sample to (N, Dx).
        z: (N, ...) second batch, flattened per sample to (N, Dz).

    Returns:
        (), a scalar tensor in [-1, 1].

    Raises:
        ConfigError: (a ``ValueError``) if N < 4 or the batch sizes differ.
        DataError: (a ``ValueError``) if x or z holds NaN/inf.

    >>> x = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])
    >>> float(u_distance_correlation_sqr(x, -x))
    1.0
    >>> round(float(u_distance_correlation_sqr(x, (x - 2) ** 2)), 4)
    -0.4082
    """
    x, z = _as_pair(x, z, min_samples=4, name="u_distance_correlation_sqr")
    return _correlation_sqr(x, z, unbiased=True)
