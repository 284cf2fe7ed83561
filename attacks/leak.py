"""The normalised ``leak`` of an attack result: 0 = no better than a blind guess, 1 = exact.

Every result carries ``leak`` in [0, 1], in the data's own terms. Each is :func:`normalised`: how
far the attack gets beyond what a blind guess (one that never looks at the cut) reaches, as a
share of what was left to reach:

- images: ``clip((ssim - baseline_ssim) / (1 - baseline_ssim), 0, 1)`` (:func:`ssim_leak`), where
  ``baseline_ssim`` is the SSIM of the mean of the attacker's aux images, given for every victim
  (:func:`~nopeek.attacks.metrics.baseline_reconstruction`);
- tabular rows: ``mean_j clip(R2_j, 0, 1)`` over the features j that vary, with
  ``R2_j = 1 - SSE_j(x_hat) / SSE_j(guess)`` against the same mean guess, in the data's original
  units (:func:`tabular_report`; the guess scores R2 0 by construction). ``r2`` is the plain mean
  of ``R2_j``: sklearn's ``r2_score(x, x_hat)`` when the guess is the victims' own mean;
- labels: ``clip((auc_folded_max - chance) / (1 - chance), 0, 1)``, where ``chance`` is the
  worst-epoch folded AUC that the attack's own scores reach against permuted labels
  (:func:`~nopeek.attacks.metrics.label_chance`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nopeek.errors import ConfigError

TOLERANCE = 0.05
"""A tabular value counts as recovered within ``TOLERANCE`` times its feature's training range."""
MAX_LEVELS = 10
"""An integer-valued column with at most this many distinct training values is categorical."""
_INTEGER_SLACK = 1e-4  # relative: standardising and undoing it moves an integer by ~1e-7


def normalised(value: float, blind: float) -> float:
    """``clip((value - blind) / (1 - blind), 0, 1)`` for a score whose exact value is 1.

    0 when ``value`` is no better than the ``blind`` guess's score, 1 when exact; 0 as well
    when the blind guess is already exact (nothing is left to leak).

    >>> round(normalised(0.6, 0.2), 6)
    0.5
    >>> normalised(0.1, 0.2), normalised(1.0, 1.0)
    (0.0, 0.0)
    """
    if blind >= 1.0:
        return 0.0
    return min(1.0, max(0.0, (float(value) - blind) / (1.0 - blind)))


def ssim_leak(ssim: float, baseline_ssim: float) -> float:
    """The leak of an image reconstruction: SSIM above the blind guess's, scaled to [0, 1].

    >>> round(ssim_leak(0.6, 0.2), 6), ssim_leak(0.1, 0.2)
    (0.5, 0.0)
    """
    return normalised(ssim, baseline_ssim)


def categorical_levels(values: Tensor, *, max_levels: int = MAX_LEVELS) -> Tensor | None:
    """The sorted levels of a categorical column (N,) in original units, or None if continuous.

    The rule: at most 2 distinct values (a flag, however coded), or integer-valued (within a
    relative 1e-4) with at most ``max_levels`` distinct values. An integer column's levels are
    rounded to integers.

    >>> categorical_levels(torch.tensor([0.0, 1.0, 1.0])).tolist()
    [0.0, 1.0]
    >>> categorical_levels(torch.tensor([1.0, 2.0, 3.0])).tolist()
    [1.0, 2.0, 3.0]
    >>> categorical_levels(torch.tensor([0.5, 1.7, 2.2])) is None
    True
    """
    values = values.double()
    slack = _INTEGER_SLACK * values.abs().clamp_min(1)
    integer = bool(((values - values.round()).abs() <= slack).all())
    levels = torch.unique(values.round() if integer else values)
    return levels if len(levels) <= 2 or (integer and len(levels) <= max_levels) else None


@dataclass(frozen=True)
class Columns:
    """The D features of tabular data as scoring sees them, in the data's original units.

    ``mean``, ``std`` (D,): the standardisation the data set applied (what the model takes is
    ``(raw - mean) / std``); ``span`` (D,): max - min of each feature over the reference
    (training) rows in original units, 0 for a constant column; ``levels``: per feature, the
    levels of a categorical column (:func:`categorical_levels`), else None.
    """

    mean: Tensor
    std: Tensor
    span: Tensor
    levels: tuple[Tensor | None, ...]

    @classmethod
    def of(cls, rows: Tensor, *, mean: Tensor | None = None, std: Tensor | None = None) -> Columns:
        """From reference rows (N, D) as the model takes them, standardized with ``mean`` and
        ``std`` (D,) (None: not standardized).

        >>> cols = Columns.of(torch.tensor([[0.0, -1.0], [0.0, 1.0]]), std=torch.tensor([1.0, 2.0]))
        >>> cols.span.tolist(), [lv.tolist() for lv in cols.levels]
        ([0.0, 4.0], [[0.0], [-2.0, 2.0]])
        """
        rows = rows.flatten(1)
        if len(rows) == 0:
            raise ConfigError("tabular scoring needs reference rows; the training split is empty")
        d = rows.shape[1]
        mean = torch.zeros(d, dtype=torch.float64) if mean is None else mean.double().flatten()
        std = torch.ones(d, dtype=torch.float64) if std is None else std.double().flatten()
        raw = rows.double() * std + mean
        span = raw.max(0).values - raw.min(0).values
        return cls(mean, std, span, tuple(categorical_levels(raw[:, j]) for j in range(d)))

    def original(self, x: Tensor) -> Tensor:
        """Rows (N, D) as the model takes them -> the data's original units, float64 (N, D)."""
        return x.flatten(1).double() * self.std + self.mean


def r2_per_feature(x: Tensor, x_hat: Tensor, guess: Tensor) -> list[float | None]:
    """``1 - SSE_j(x_hat) / SSE_j(guess)`` per feature j of rows (N, D); None where the guess
    is exact (SSE 0: nothing to explain).

    >>> r2_per_feature(torch.tensor([[0.0], [2.0]]), torch.tensor([[0.0], [1.0]]),
    ...                torch.ones(2, 1))
    [0.5]
    """
    x, x_hat, guess = (t.flatten(1).double() for t in (x, x_hat, guess))
    sse, blind = ((x_hat - x) ** 2).sum(0), ((guess - x) ** 2).sum(0)
    return [None if b == 0 else float(1.0 - s / b) for s, b in zip(sse.tolist(), blind.tolist())]


def _within(x: Tensor, guess: Tensor, keep: Tensor, limit: Tensor) -> float | None:
    """Share of rows whose every kept feature is within ``limit`` (D,) of the truth."""
    if not bool(keep.any()):
        return None
    return float(((guess - x).abs()[:, keep] <= limit[keep]).all(1).double().mean())


def _nearest(values: Tensor, levels: Tensor) -> Tensor:
    """Index of the level (L,) nearest to each value (N,)."""
    return (values[:, None] - levels).abs().argmin(1)


def _exact(x: Tensor, guess: Tensor, columns: Columns, keep: Tensor) -> float | None:
    """Share of categorical cells whose guess, rounded to the nearest level, is the truth's."""
    hits = []
    for j, levels in enumerate(columns.levels):
        if levels is None or not bool(keep[j]):
            continue
        hits.append(_nearest(guess[:, j], levels) == _nearest(x[:, j], levels))
    return float(torch.cat(hits).double().mean()) if hits else None


def tabular_report(
    x: Tensor, x_hat: Tensor, guess: Tensor, columns: Columns, *, tolerance: float = TOLERANCE
) -> dict[str, object]:
    """How well ``x_hat`` recovers tabular rows ``x``, next to the blind ``guess``; all (N, D)
    as the model takes them, scored in original units (``columns.original``).

    Constant columns (training range 0) are left out of every number: they hold nothing to leak.
    Keys: ``r2_per_feature`` (None for a left-out column), ``r2`` (their mean), ``leak`` (mean
    of ``clip(R2_j, 0, 1)``; 0 if no column varies), ``rows_within_tolerance`` (share of rows
    whose every feature is within ``tolerance`` times its training range), ``categorical_exact``
    (share of categorical cells recovered exactly after rounding to the nearest level; None
    without categorical columns), both also for the guess (``baseline_...``),
    ``categorical_columns`` (how many) and ``tolerance``.
    """
    if not 0 < tolerance < 1:
        raise ConfigError(f"the tolerance is a share of each feature's range, got {tolerance}")
    x, x_hat, guess = (columns.original(t) for t in (x, x_hat, guess))
    keep = columns.span > 0
    r2 = [v if bool(k) else None for v, k in zip(r2_per_feature(x, x_hat, guess), keep)]
    known = [v for v in r2 if v is not None]
    limit = tolerance * columns.span
    n_cat = sum(1 for j, lv in enumerate(columns.levels) if lv is not None and bool(keep[j]))
    return {
        "r2_per_feature": r2,
        "r2": sum(known) / len(known) if known else None,
        "leak": sum(normalised(v, 0.0) for v in known) / len(known) if known else 0.0,
        "rows_within_tolerance": _within(x, x_hat, keep, limit),
        "baseline_rows_within_tolerance": _within(x, guess, keep, limit),
        "categorical_exact": _exact(x, x_hat, columns, keep),
        "baseline_categorical_exact": _exact(x, guess, columns, keep),
        "categorical_columns": n_cat,
        "tolerance": float(tolerance),
    }
