"""How close a reconstruction is to the raw inputs: MSE, PSNR, SSIM, dCor, and a trivial baseline.

Plain functions on tensors. ``x`` is the ground truth and ``x_hat`` the reconstruction, both
(N, *input_shape): images (N, C, H, W) or tabular rows (N, D). ``data_range`` is the span of a
valid input (``Dataset.data_range``: 1.0 for images in [0, 1], max - min of the training
features for standardized tabular data); PSNR and SSIM are relative to it.

A number only means something next to the trivial baseline: :func:`baseline_reconstruction`
"reconstructs" every sample as the mean of the attacker's auxiliary data, which needs no access
to the cut at all. :func:`reconstruction_report` gives both side by side, and the normalised
``leak`` between them (:mod:`nopeek.attacks.leak`). A label attack's blind baseline is its own
scores against permuted labels (:func:`~nopeek.attacks.label_metrics.label_chance`); the label
attacks' scores live in :mod:`nopeek.attacks.label_metrics` and are importable from here too.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from nopeek.attacks.label_metrics import (  # the label attacks' scores, here for one import
    AS_NAMED,
    CHANCE_PERMUTATIONS,
    FLIPPED,
    align_classes,
    fold_auc,
    label_auc,
    label_chance,
    label_leak,
    label_leak_of,
    label_report,
)
from nopeek.attacks.leak import TOLERANCE, Columns, ssim_leak, tabular_report
from nopeek.distance import distance_correlation
from nopeek.errors import ConfigError

PSNR_CAP_DB = 100.0  # PSNR of an exact reconstruction is infinite; JSON has no inf
SSIM_K = 0.01, 0.03  # the usual SSIM stabilising constants (Wang et al. 2004)


def _check_pair(x: Tensor, x_hat: Tensor) -> None:
    if x.shape != x_hat.shape:
        raise ConfigError(
            f"reconstruction has shape {tuple(x_hat.shape)} but the inputs {tuple(x.shape)}; "
            "an attack must return one reconstruction per sample, of the input's shape"
        )
    if x.shape[0] == 0:
        raise ConfigError("no samples to score; pass --n-samples >= 1")


def mse(x: Tensor, x_hat: Tensor) -> float:
    """Mean squared error over all samples and features.

    >>> mse(torch.zeros(2, 3), torch.ones(2, 3))
    1.0
    """
    _check_pair(x, x_hat)
    return float(((x.double() - x_hat.double()) ** 2).mean())


def psnr_per_sample(x: Tensor, x_hat: Tensor, *, data_range: float) -> Tensor:
    """PSNR of each sample in dB: ``10 log10(data_range^2 / MSE_i)``, capped at 100 dB. (N,)."""
    _check_pair(x, x_hat)
    err = ((x.double() - x_hat.double()) ** 2).flatten(1).mean(1)
    floor = data_range**2 * 10 ** (-PSNR_CAP_DB / 10)
    return 10 * torch.log10(data_range**2 / err.clamp_min(floor))


def psnr(x: Tensor, x_hat: Tensor, *, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB, computed per sample and averaged over samples.

    ``data_range`` is the span of a valid input (1.0 for images in [0, 1]); it is the "peak"
    of PSNR. Per-sample averaging (not PSNR of the pooled MSE) weights every sample equally.
    An exact reconstruction gets the cap, 100 dB.

    >>> x = torch.zeros(1, 4)
    >>> round(psnr(x, x + 0.1, data_range=1.0), 6)  # 10 log10(1 / 0.01)
    20.0
    """
    return float(psnr_per_sample(x, x_hat, data_range=data_range).mean())


def ssim_sigma(input_shape: tuple[int, ...]) -> float:
    """The Gaussian window's sigma for SSIM on images of ``input_shape`` (C, H, W).

    Images at least 16 pixels on each side use the standard window (sigma 1.5, 11x11, as in
    Wang et al. 2004). Smaller ones (8x8 digits) use sigma 0.5, which torchmetrics turns into a
    5x5 window: an 11x11 window would cover more than the whole image.
    """
    return 1.5 if min(input_shape[-2:]) >= 16 else 0.5


def ssim_per_sample(x: Tensor, x_hat: Tensor, *, data_range: float) -> Tensor | None:
    """SSIM of each image (N,), or ``None`` when the inputs are not images (N, C, H, W).

    SSIM compares local luminance, contrast and structure of images; on tabular rows it is not
    defined, so this returns ``None`` rather than a number.
    """
    _check_pair(x, x_hat)
    if x.dim() != 4:
        return None
    # imported here: torchmetrics pulls in torchvision and torch._dynamo (2 s), which a process
    # that never scores an image (the report's main process, a party) need not wait for
    from torchmetrics.functional.image import structural_similarity_index_measure

    out = structural_similarity_index_measure(
        x_hat.double(),
        x.double(),
        gaussian_kernel=True,
        sigma=ssim_sigma(tuple(x.shape[1:])),
        data_range=float(data_range),
        k1=SSIM_K[0],
        k2=SSIM_K[1],
        reduction="none",
    )
    return out


def ssim(x: Tensor, x_hat: Tensor, *, data_range: float) -> float | None:
    """Mean structural similarity (torchmetrics) over images; ``None`` for non-images.

    ``x``, ``x_hat``: (N, C, H, W). ``data_range``: span of a valid pixel value (1.0 for images
    in [0, 1]). The Gaussian window follows :func:`ssim_sigma` (5x5 for 8x8 digits).

    >>> x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> round(ssim(x, x, data_range=1.0), 6)
    1.0
    >>> ssim(torch.zeros(2, 30), torch.zeros(2, 30), data_range=1.0) is None
    True
    """
    values = ssim_per_sample(x, x_hat, data_range=data_range)
    return None if values is None else float(values.mean())


def baseline_reconstruction(aux_x: Tensor, n: int) -> Tensor:
    """The trivial attack: the mean of the auxiliary inputs, repeated ``n`` times.

    ``aux_x``: (A, *input_shape) -> (n, *input_shape). It needs no access to the cut, so an
    attack that does not beat it has learnt nothing about the victims from what crossed it.

    >>> baseline_reconstruction(torch.tensor([[0.0, 2.0], [2.0, 4.0]]), 3).tolist()
    [[1.0, 3.0], [1.0, 3.0], [1.0, 3.0]]
    """
    if len(aux_x) == 0:
        raise ConfigError("the auxiliary data are empty; the baseline needs at least one sample")
    return aux_x.float().mean(0, keepdim=True).expand(n, *aux_x.shape[1:]).clone()


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ArithmeticError(f"a reconstruction metric is {value}; the reconstruction is broken")
    return value


def reconstruction_report(
    x: Tensor,
    x_hat: Tensor,
    baseline: Tensor,
    *,
    data_range: float,
    columns: Columns | None = None,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Metrics of ``x_hat`` and of the ``baseline`` against ``x``, plus dCor(x, x_hat) and the
    normalised ``leak`` (:mod:`nopeek.attacks.leak`).

    All (N, *input_shape). Keys: ssim, psnr, mse, baseline_ssim, baseline_psnr, baseline_mse,
    dcor_reconstruction (biased dCor in float64, as the trainer's ``dcor_test``), data_range,
    leak. Images (N, C, H, W): ``leak`` from SSIM against the baseline's
    (:func:`~nopeek.attacks.leak.ssim_leak`). Tabular rows: SSIM entries are ``None``; PSNR
    and MSE are in the units the model takes; ``columns`` (the features' standardization,
    ranges and levels, :class:`~nopeek.attacks.leak.Columns`) is required and adds the keys of
    :func:`~nopeek.attacks.leak.tabular_report` (R2, rows within ``tolerance``, categorical
    cells recovered), with its ``leak``.

    >>> x = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    >>> out = reconstruction_report(x, x, x.mean(0).expand(3, 2), data_range=5.0,
    ...                             columns=Columns.of(x))
    >>> out["leak"], out["r2"], out["rows_within_tolerance"]
    (1.0, 1.0, 1.0)
    """
    image = x.dim() == 4
    if not image and columns is None:
        raise ConfigError(
            "scoring tabular rows needs their columns: pass columns=Columns.of(training rows, "
            "mean=..., std=...) (nopeek.attacks._scoring.columns_of(dataset))"
        )
    out: dict[str, Any] = {}
    for prefix, guess in (("", x_hat), ("baseline_", baseline)):
        out[f"{prefix}ssim"] = _finite(ssim(x, guess, data_range=data_range))
        out[f"{prefix}psnr"] = _finite(psnr(x, guess, data_range=data_range))
        out[f"{prefix}mse"] = _finite(mse(x, guess))
    if len(x) >= 2:
        dcor = distance_correlation(x.double().flatten(1), x_hat.double().flatten(1))
        out["dcor_reconstruction"] = _finite(float(dcor))
    else:
        out["dcor_reconstruction"] = None
    out["data_range"] = float(data_range)
    if image:
        out["leak"] = ssim_leak(out["ssim"], out["baseline_ssim"])
    else:
        out |= tabular_report(x, x_hat, baseline, columns, tolerance=tolerance)
    return out


__all__ = [
    "AS_NAMED",
    "CHANCE_PERMUTATIONS",
    "FLIPPED",
    "PSNR_CAP_DB",
    "SSIM_K",
    "align_classes",
    "baseline_reconstruction",
    "fold_auc",
    "label_auc",
    "label_chance",
    "label_leak",
    "label_leak_of",
    "label_report",
    "mse",
    "psnr",
    "psnr_per_sample",
    "reconstruction_report",
    "ssim",
    "ssim_per_sample",
    "ssim_sigma",
]
