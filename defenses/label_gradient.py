"""Label-gradient defenses (Li et al. 2022), applied by the party that holds the labels.

The gradient that the label party sends back at the cut leaks labels: for binary tasks the
positive examples' gradients have larger norms and point in another direction than the
negatives' (the norm and direction attacks). These defenses perturb each sample's gradient row
``g_i`` (the gradient ``(N, *cut_shape)`` flattened to ``(N, d)``) before it is sent:

- :class:`MaxNorm` (``max-norm``, Li et al.'s max-norm heuristic) - additive isotropic Gaussian
  noise ``eta_i ~ N(0, sigma_i^2 I_d)`` with ``sigma_i^2 = (max_j ||g_j||^2 - ||g_i||^2) / d``,
  so that ``E||g_i + eta_i||^2 = ||g_i||^2 + d sigma_i^2 = max_j ||g_j||^2``: every row's expected
  squared norm equals the largest in the batch. A zero row gets the full ``max_j ||g_j||^2`` of
  noise, so it no longer stands out to the norm attack; the noise also hides direction.
- :class:`MaxNormMult` (``max-norm-mult``) - the multiplicative variant ``g_i * (1 + s_i xi_i)``,
  ``xi_i ~ N(0, 1)``, ``s_i^2 = max_j ||g_j||^2 / ||g_i||^2 - 1``: the same expected squared norms
  with noise only along ``g_i`` (as some implementations read the paper). It keeps every
  direction, and a row that is exactly zero stays zero, revealing its label to the norm attack.
- :class:`IsotropicNoise` - ``N(0, std^2 I)`` on every row with ``std = r * max_j ||g_j|| /
  sqrt(d)`` (expected noise power ``r^2 max_j ||g_j||^2``); or, with ``match=max-norm`` /
  ``match=marvell``, the per-batch power of that defense (for trade-off comparisons at equal
  noise power).
- :class:`~nopeek.defenses.marvell.Marvell` - optimized per-class noise (its own module).

Each reports the mean per-example noise power ``E||eta||^2`` it added and the mean squared
gradient norm (``<name>_noise_power``, ``<name>_grad_power``) in ``metrics.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from nopeek.defenses.base import Defense, check_positive, rows
from nopeek.errors import ConfigError
from nopeek.hooks import TrainContext

log = logging.getLogger(__name__)


def binary_labels_error(name: str, n_classes: int) -> ConfigError:
    return ConfigError(
        f"{name} needs binary labels, but the task has {n_classes} classes; "
        "add --one-vs-rest K (or drop the defense)"
    )


@dataclass(frozen=True)
class ClassStats:
    """Per-batch class statistics of gradient rows (float64): the inputs of Marvell.

    ``p``: fraction of positives; ``mean1``/``mean0``: (d,) class means; ``var1``/``var0``:
    mean over coordinates of each class's per-coordinate (population) variance.
    """

    p: float
    mean1: Tensor
    mean0: Tensor
    var1: float
    var0: float

    @property
    def diff(self) -> Tensor:
        return self.mean1 - self.mean0


def class_stats(g: Tensor, labels: Tensor) -> ClassStats | None:
    """Statistics of rows ``g`` (N, d) by binary ``labels`` (N,); None if a class is missing."""
    pos = labels == 1
    n1 = int(pos.sum())
    if n1 == 0 or n1 == len(labels):
        return None
    g = g.double()
    g1, g0 = g[pos], g[~pos]
    return ClassStats(
        p=n1 / len(labels),
        mean1=g1.mean(0),
        mean0=g0.mean(0),
        var1=float(g1.var(0, correction=0).mean()),
        var0=float(g0.var(0, correction=0).mean()),
    )


class LabelGradientDefense(Defense):
    """Base class: perturb the rows of the gradient the label party sends back.

    Subclasses implement :meth:`noise` -> ``(eta (N, d), designed expected power per row)``.
    They change the gradient sent back while training, never what the data party sends, so a
    query to the client does not pass through them (``acts_on_queries`` False).
    """

    acts_at = "labels"
    acts_on_queries = False

    needs_binary: ClassVar[bool] = False
    couples_batch: ClassVar[bool] = True  # noise scales come from batch statistics

    def __init__(self) -> None:
        super().__init__()
        self._sums = {"noise": 0.0, "grad": 0.0, "budget": 0.0, "rows": 0, "steps": 0}
        self._sums |= {"one_class_steps": 0, "unprotected_steps": 0}

    def setup(self, ctx: TrainContext) -> None:
        n_classes = ctx.extra.get("n_classes")
        if self.needs_binary and n_classes is not None and n_classes != 2:
            raise binary_labels_error(self.name, n_classes)
        self._seed_generators(ctx, "noise")

    def backward(
        self, cut: str, grad: Tensor, *, activation: Tensor, labels: Tensor | None
    ) -> Tensor:
        if labels is None:  # only the party that holds the labels applies the defense
            return grad
        if self.needs_binary and bool((labels > 1).any() | (labels < 0).any()):
            raise binary_labels_error(self.name, int(labels.max()) + 1)
        g = rows(grad)
        eta, budget = self.noise(g, labels)
        self._sums["noise"] += float(eta.double().pow(2).sum())
        self._sums["grad"] += float(g.double().pow(2).sum())
        self._sums["budget"] += budget
        self._sums["rows"] += len(g)
        self._sums["steps"] += 1
        return grad + eta.reshape(grad.shape).to(grad.dtype)

    def noise(self, g: Tensor, labels: Tensor) -> tuple[Tensor, float]:
        raise NotImplementedError

    def count_one_class_batch(self, *, reused: bool) -> None:
        """A batch holding one class only: the last batch's estimates are reused if any."""
        self._sums["one_class_steps"] += 1
        if not reused:
            self._sums["unprotected_steps"] += 1
            log.warning(
                "%s: a batch holds one class only and no earlier estimate exists; "
                "its gradient is sent without noise",
                self.name,
            )

    def _randn(self, *shape: int, like: Tensor) -> Tensor:
        return torch.randn(
            shape, generator=self.generator("noise"), device=like.device, dtype=like.dtype
        )

    def metrics(self) -> dict[str, Any]:
        key = self.name.replace("-", "_")
        n, steps = max(self._sums["rows"], 1), max(self._sums["steps"], 1)
        out = {f"{key}_{k}": v for k, v in self.params().items() if v is not None}
        out[f"{key}_noise_power"] = self._sums["noise"] / n
        out[f"{key}_grad_power"] = self._sums["grad"] / n
        out[f"{key}_power_budget"] = self._sums["budget"] / steps
        if self.needs_binary:
            out[f"{key}_one_class_batches"] = self._sums["one_class_steps"]
            out[f"{key}_unprotected_batches"] = self._sums["unprotected_steps"]
        return out


def max_norm_sigmas(g: Tensor) -> Tensor:
    """Per-row std of max-norm-mult's multiplicative noise for rows ``g`` (N, d) -> (N,).

    >>> max_norm_sigmas(torch.tensor([[3.0, 4.0], [1.0, 2.0]]))
    tensor([0., 2.])
    """
    sq = g.pow(2).sum(1)
    return (sq.max() / sq.clamp_min(1e-30) - 1).clamp_min(0).sqrt()


def max_norm_stds(g: Tensor) -> Tensor:
    """Per-row std of max-norm's additive noise for rows ``g`` (N, d) -> (N,) (per coordinate).

    ``sigma_i = sqrt((max_j ||g_j||^2 - ||g_i||^2) / d)``, so ``||g_i||^2 + d sigma_i^2`` is the
    batch maximum for every row (a zero row included).

    >>> max_norm_stds(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    tensor([0.0000, 3.5355])
    """
    sq = g.double().pow(2).sum(1)
    return ((sq.max() - sq).clamp_min(0) / g.shape[1]).sqrt().to(g.dtype)


class MaxNorm(LabelGradientDefense):
    """Li et al.'s max-norm: additive per-example Gaussian noise up to the batch's largest norm.

    Row ``i`` gets ``N(0, sigma_i^2 I_d)`` with ``sigma_i`` from :func:`max_norm_stds`, so its
    expected squared norm ``||g_i||^2 + d sigma_i^2`` equals ``max_j ||g_j||^2``: the norm attack
    sees the same expected norm for every example, zero rows included (they get the most
    noise). The multiplicative variant is :class:`MaxNormMult` (``max-norm-mult``).
    """

    name = "max-norm"
    purpose = 6

    def noise(self, g: Tensor, labels: Tensor) -> tuple[Tensor, float]:
        eta = max_norm_stds(g).unsqueeze(1) * self._randn(*g.shape, like=g)
        return eta, max_norm_power(g)


class MaxNormMult(LabelGradientDefense):
    """Max-norm with multiplicative noise along each gradient: ``g_i * (1 + s_i xi_i)``.

    ``s_i`` from :func:`max_norm_sigmas` gives every row the batch's largest expected squared
    norm, like :class:`MaxNorm`, but the noise lies along ``g_i`` only: directions are kept
    exactly (the direction attack is untouched up to sign flips) and a row that is exactly zero
    stays zero (e.g. when the server's first layer after the cut is a ReLU that is off for a
    whole class), so such rows still reveal their label to the norm attack. Kept for comparison
    with :class:`MaxNorm` and with implementations that read max-norm this way.
    """

    name = "max-norm-mult"
    purpose = 3  # max-norm's stream before it became additive: old runs replay exactly

    def noise(self, g: Tensor, labels: Tensor) -> tuple[Tensor, float]:
        sigma = max_norm_sigmas(g)
        eta = g * (sigma * self._randn(len(g), like=g)).unsqueeze(1)
        return eta, max_norm_power(g)


def max_norm_power(g: Tensor) -> float:
    """Expected per-row noise power of max-norm (either variant):
    mean_i (max_j ||g_j||^2 - ||g_i||^2)."""
    sq = g.double().pow(2).sum(1)
    return float((sq.max() - sq).mean())


class IsotropicNoise(LabelGradientDefense):
    """Isotropic Gaussian noise on every gradient row: ``std = r * max ||g|| / sqrt(d)``.

    ``match=max-norm`` or ``match=marvell`` (with Marvell's ``s``) instead sets the per-batch
    power ``d * std^2`` to that defense's expected noise power on the same batch.
    """

    name = "isotropic"
    options: ClassVar[dict[str, str]] = {"r": "float", "match": "max-norm|marvell", "s": "float"}
    purpose = 4

    def __init__(self, *, r: float | None = None, match: str | None = None, s: float | None = None):
        super().__init__()
        example = "e.g. --defense isotropic:r=1 or isotropic:match=marvell,s=1"
        check_positive("isotropic", "r", r, example=example)
        check_positive("isotropic", "s", s, example=example)
        if match not in (None, "max-norm", "marvell"):
            raise ConfigError(f"isotropic match must be max-norm or marvell, got {match!r}")
        if r is not None and match is not None:
            raise ConfigError(f"isotropic takes r or match, not both; {example}")
        if s is not None and match != "marvell":
            raise ConfigError(
                f"isotropic s is Marvell's scale; use it with match=marvell; {example}"
            )
        self.r = 1.0 if r is None and match is None else r
        self.match = match
        self.s = 1.0 if s is None and match == "marvell" else s
        self.needs_binary = match == "marvell"
        self._last_power: float | None = None

    def noise(self, g: Tensor, labels: Tensor) -> tuple[Tensor, float]:
        d = g.shape[1]
        if self.match is None:
            power = float(self.r**2 * g.double().pow(2).sum(1).max())
        elif self.match == "max-norm":
            power = max_norm_power(g)
        else:
            stats = class_stats(g, labels)
            if stats is not None:
                self._last_power = self.s * float(stats.diff.pow(2).sum())
            else:
                self.count_one_class_batch(reused=self._last_power is not None)
            power = self._last_power if self._last_power is not None else 0.0
        return (power / d) ** 0.5 * self._randn(*g.shape, like=g), power

    def params(self) -> dict[str, Any]:
        return {"r": self.r, "match": self.match, "s": self.s}

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"last_power": self._last_power}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._last_power = state["last_power"]
