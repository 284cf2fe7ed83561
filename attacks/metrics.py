"""How close a reconstruction is to the raw inputs: MSE, PSNR, SSIM, dCor, and a trivial baseline.

Plain functions on tensors. ``x`` is the ground truth and ``x_hat`` the reconstruction, both
(N, *input_shape): images (N, C, H, W) or tabular rows (N, D). ``data_range`` is the span of a
valid input (``Dataset.data_range``: 1.0 for images in [0, 1], max - min of the training
features for standardized tabular data); PSNR and SSIM are relative to it.

A number only means something next to the trivial baseline: :func:`baseline_reconstruction`
"reconstructs" every sample as the mean of the attacker's auxiliary data, which needs no access
to the cut at all. :func:`reconstruction_report` gives both side by side, and the normalised
``leak`` between them (:mod:`nopeek.attacks.leak`). A label attack's blind baseline is its own
scores against permuted labels (:func:`label_chance`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nopeek.attacks.leak import TOLERANCE, Columns, normalised, ssim_leak, tabular_report
from nopeek.distance import distance_correlation
from nopeek.errors import ConfigError
from nopeek.seeding import numpy_rng

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


def label_auc(y: Tensor, scores: Tensor, *, n_classes: int) -> float | None:
    """ROC-AUC of label scores against true labels ``y`` (M,) with sklearn.

    Binary tasks: ``scores`` (M,) (higher = class 1) or (M, 2) (column 1 used). Multi-class:
    ``scores`` (M, n_classes), one-vs-rest macro AUC (``multi_class="ovr"`` when the rows are
    probabilities; otherwise the same per-class average over a one-hot ``y``, which sklearn's
    ovr mode computes too but only accepts for rows summing to 1). Classes absent from ``y``
    are left out of the average. ``None`` when ``y`` holds a single class (AUC undefined).
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import label_binarize

    y_np, s = y.numpy(), scores.detach().double()
    present = sorted(set(y_np.tolist()))
    if len(present) < 2:
        return None
    if n_classes == 2:
        s = s[:, 1] if s.dim() == 2 else s
        return float(roc_auc_score(y_np, s.numpy()))
    if s.dim() != 2 or s.shape[1] != n_classes:
        raise ConfigError(
            f"a label attack on a {n_classes}-class task must give (M, {n_classes}) scores, got "
            f"{tuple(s.shape)}; train with --one-vs-rest K for a binary task"
        )
    if len(present) == n_classes and torch.allclose(s.sum(1), torch.ones(len(s), dtype=s.dtype)):
        return float(roc_auc_score(y_np, s.numpy(), multi_class="ovr", average="macro"))
    onehot = label_binarize(y_np, classes=list(range(n_classes)))[:, present]
    return float(roc_auc_score(onehot, s[:, present].numpy(), average="macro"))


AS_NAMED, FLIPPED = "as named", "flipped"


def fold_auc(auc: float) -> float:
    """``max(auc, 1 - auc)``: the AUC of the better of a ranking and its reverse.

    A binary attack has to name which side is label 1; one that separates the classes
    perfectly but names them the wrong way round scores AUC 0, and an attacker who flips its
    guess (it needs one known label, or the class balance) gets 1. The fold is what leaks.

    >>> fold_auc(0.2), fold_auc(0.9)
    (0.8, 0.9)
    """
    return max(float(auc), 1.0 - float(auc))


def label_leak(aucs: list[float | None], epochs: list[int], *, binary: bool = True) -> dict:
    """The folded AUCs of a label attack from its AUCs per epoch (``aucs[k]`` at ``epochs[k]``).

    Keys: ``auc_folded`` (final epoch, :func:`fold_auc` of ``auc``), ``auc_orientation``
    (``"as named"`` when the attack's naming is the better one, AUC >= 0.5, else
    ``"flipped"``), ``auc_folded_per_epoch``, and the worst epoch an attacker could pick:
    ``auc_folded_max`` and its ``auc_folded_max_epoch`` (the earliest of ties). An undefined
    AUC (one class) stays ``None``. Multi-class AUCs are not folded (``binary=False``): their
    classes were already matched to the truth (:func:`align_classes`), and a one-vs-rest
    average has no single flip. The normalised ``leak`` sets ``auc_folded_max`` against
    :func:`label_chance`.

    >>> out = label_leak([0.6, 0.1, 0.3], [0, 1, 2])
    >>> out["auc_folded"], out["auc_orientation"], out["auc_folded_max"]
    (0.7, 'flipped', 0.9)
    >>> out["auc_folded_max_epoch"]
    1
    """
    per = [None if a is None else (fold_auc(a) if binary else float(a)) for a in aucs]
    last = aucs[-1] if aucs else None
    known = [(v, -k) for k, v in enumerate(per) if v is not None]
    worst = max(known, default=None)
    return {
        "auc_folded": per[-1] if per else None,
        "auc_orientation": None if last is None else _orientation(last, binary),
        "auc_folded_per_epoch": per,
        "auc_folded_max": None if worst is None else worst[0],
        "auc_folded_max_epoch": None if worst is None else int(epochs[-worst[1]]),
    }


CHANCE_PERMUTATIONS = 20
"""Label permutations :func:`label_chance` averages over."""


def label_chance(
    y: dict[int, Tensor],
    scores: dict[int, Tensor],
    ids: dict[int, Tensor],
    *,
    n_classes: int,
    seed: int,
    predicted: dict[int, Tensor] | None = None,
    up_to_permutation: bool = False,
    permutations: int = CHANCE_PERMUTATIONS,
) -> float | None:
    """The worst-epoch folded AUC the attack's own scores reach against permuted labels.

    A label attack's blind baseline: the labels are shuffled among the attacked samples (one
    permutation of the sample ids, the same in every epoch, so scores that stay alike from
    epoch to epoch keep doing so), every epoch is scored as :func:`label_report` and
    :func:`label_leak` score the truth, and the worst epoch's ``auc_folded_max`` is averaged
    over ``permutations`` permutations drawn from the stream ``attack.label-chance`` of
    ``seed``. Picking the worst of many epochs lifts chance above 0.5 (about 0.64 for 30
    epochs of a few hundred samples); ``leak`` is measured above this. ``None`` when no
    permutation gives an AUC (one class). Arguments as :func:`label_report`, plus ``ids[e]``
    (M_e,), the sample ids of epoch ``e``.
    """
    epochs = sorted(y)
    every = torch.cat([ids[e].detach().cpu().long() for e in epochs])
    labels = torch.cat([y[e] for e in epochs])
    unique = torch.unique(every)  # sorted; a sample's label is the same in every epoch
    label_of = torch.empty(len(unique), dtype=labels.dtype)
    label_of[torch.searchsorted(unique, every)] = labels
    where = {e: torch.searchsorted(unique, ids[e].detach().cpu().long()) for e in epochs}
    rng = numpy_rng(seed, "attack.label-chance")
    shuffles = [
        label_of[torch.from_numpy(rng.permutation(len(unique)))] for _ in range(permutations)
    ]
    if n_classes == 2 and not up_to_permutation:  # every permutation of an epoch in one call
        per_epoch = [_binary_aucs([s[where[e]] for s in shuffles], scores[e]) for e in epochs]
        aucs = [[per_epoch[k][p] for k in range(len(epochs))] for p in range(permutations)]
    else:
        aucs = [
            label_report({e: s[where[e]] for e in epochs}, scores, predicted, n_classes=n_classes,
                         up_to_permutation=up_to_permutation)["auc_per_epoch"]
            for s in shuffles
        ]  # fmt: skip
    worst = []
    for per in aucs:
        folded = label_leak(per, epochs, binary=n_classes == 2)
        if folded["auc_folded_max"] is not None:
            worst.append(folded["auc_folded_max"])
    return sum(worst) / len(worst) if worst else None


def _binary_aucs(ys: list[Tensor], scores: Tensor) -> list[float | None]:
    """:func:`label_auc` of each labelling ``ys[p]`` (M,) of one binary epoch's ``scores`` (M,)
    or (M, 2), in one sklearn call over the columns (the same numbers: sklearn scores each
    column as it scores one binary task; 40 % of the time of one call each)."""
    from sklearn.metrics import roc_auc_score

    s = scores.detach().double()
    s = s[:, 1] if s.dim() == 2 else s
    both = [len(torch.unique(y)) == 2 for y in ys]  # one class: the AUC is undefined
    cols = [y.numpy() for y, ok in zip(ys, both) if ok]
    if not cols:
        return [None] * len(ys)
    given = iter(roc_auc_score(np.stack(cols, 1), np.repeat(s.numpy()[:, None], len(cols), 1),
                               average=None).tolist())  # fmt: skip
    return [float(next(given)) if ok else None for ok in both]


def label_leak_of(auc_folded_max: float | None, chance: float | None) -> float | None:
    """``clip((auc_folded_max - chance) / (1 - chance), 0, 1)``: a label attack's ``leak``
    (:func:`~nopeek.attacks.leak.normalised`); None when either is undefined (one class).

    >>> round(label_leak_of(0.82, 0.64), 6), label_leak_of(0.6, 0.64)
    (0.5, 0.0)
    """
    if auc_folded_max is None or chance is None:
        return None
    return normalised(auc_folded_max, chance)


def _orientation(auc: float, binary: bool) -> str:
    return AS_NAMED if auc >= 0.5 or not binary else FLIPPED


def align_classes(y: Tensor, scores: Tensor, predicted: Tensor | None, *, n_classes: int):
    """Relabel an attack's class indices to the true classes they agree with most.

    For attacks that learn which samples share a label but not its name (the classes of a
    cloned head are a permutation of the true ones). The permutation comes from the Hungarian
    algorithm on the confusion matrix of ``predicted`` (or the scores' argmax) against ``y``:
    a best case for the attacker, which only the scorer (holding ``y``) can compute. Returns
    ``(scores, predicted)`` with scores' columns moved to the matched true classes.
    """
    from nopeek.attacks.label import best_permutation

    guess = predicted if predicted is not None else scores.argmax(1)
    perm = best_permutation(y, guess.detach().cpu().long(), n_classes)
    aligned = torch.empty_like(scores)
    aligned[:, perm] = scores
    return aligned, (None if predicted is None else perm[predicted.detach().cpu().long()])


def label_report(
    y: dict[int, Tensor],
    scores: dict[int, Tensor],
    predicted: dict[int, Tensor] | None,
    *,
    n_classes: int,
    up_to_permutation: bool = False,
) -> dict:
    """AUC per epoch of a label attack, the final epoch's AUC, and its accuracy if it guesses.

    ``y[e]`` (M_e,) true labels and ``scores[e]`` (M_e,) or (M_e, classes) for epoch ``e``;
    ``predicted[e]`` (M_e,) hard guesses where the attack makes them. With
    ``up_to_permutation`` (multi-class scores whose class indices are arbitrary), each epoch is
    scored after :func:`align_classes`. Keys: ``auc`` (final epoch), ``auc_per_epoch``,
    ``epochs``, ``accuracy`` (final epoch, or ``None``), ``n_samples`` (final epoch).
    """
    epochs = sorted(y)
    if not epochs:
        raise ConfigError("the label attack scored no epoch; were any gradients recorded?")
    predicted = dict(predicted or {})
    scores = dict(scores)
    if up_to_permutation and n_classes > 2:
        for e in epochs:
            scores[e], guess = align_classes(
                y[e], scores[e].detach().cpu(), predicted.get(e), n_classes=n_classes
            )
            if guess is not None:
                predicted[e] = guess
    aucs = [label_auc(y[e], scores[e], n_classes=n_classes) for e in epochs]
    last = epochs[-1]
    accuracy = None
    if last in predicted:
        accuracy = float((predicted[last].detach().cpu().long() == y[last]).float().mean())
    return {
        "auc": aucs[-1],
        "auc_per_epoch": aucs,
        "epochs": epochs,
        "accuracy": accuracy,
        "n_samples": len(y[last]),
    }
