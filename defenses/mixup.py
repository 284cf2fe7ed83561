"""mixup at the label party: it trains on mixed pairs of examples, so each gradient mixes classes.

Zhang, Cisse, Dauphin, Lopez-Paz, "mixup: Beyond Empirical Risk Minimization" (ICLR 2018)
trains on ``x~ = lam x_i + (1 - lam) x_j`` with the label ``y~ = lam y_i + (1 - lam) y_j``
(``j`` a random partner: a permutation of the batch, ``lam ~ Beta(alpha, alpha)``). SecretFlow
ships it for split learning as a defense against gradient-based label inference
(``sl/defenses/mixup.py``: the label party mixes its own inputs and its loss,
``lam CE(out, y) + (1 - lam) CE(out, y[perm])``). Here the label party mixes what it holds:

- its labels, ``y~_i = lam onehot(y_i) + (1 - lam) onehot(y_pi(i))``, as its loss's targets
  (always; this alone is SecretFlow's loss at a label party without features of its own, the
  default): the gradient sent back for ``z_i`` is that of a target naming ``y_i`` and
  ``y_pi(i)`` with weights ``lam`` and ``1 - lam``, tied at ``lam = 0.5``;
- with ``inputs=true``, also the activations it *receives* at the cut (its "samples", Zhang et
  al.'s input mixing at the cut), ``z~_i = lam z_i + (1 - lam) z_pi(i)`` (every received
  activation of a step with the same ``lam`` and ``pi``, e.g. the K clients of a vertical run),
  before its segment reads them. The gradient for ``z_i`` is then ``lam G_i + (1 - lam)
  G_pi^-1(i)``, whose targets name ``y_i`` with weight ``lam^2 + (1 - lam)^2 >= 1/2`` and two
  partners with ``lam (1 - lam)`` each: the true class keeps the largest weight, so this mixes
  the gradients' classes less than the labels alone do (measured in docs/defenses.md).

Details left open, as chosen here:

- ``lam`` fixed (default 0.5, SecretFlow's) or, with ``alpha``, drawn per training step from
  Beta(alpha, alpha) (Zhang et al.; by the inverse CDF of one uniform of the seeded stream);
- ``pi`` is a fresh uniform permutation of the batch every training step, from the defense's
  seeded stream (SecretFlow reseeds one fixed permutation every batch);
- evaluation and inference see nothing mixed (a query to the client does not pass through it).

``metrics.json`` gains ``mixup_lam`` (or ``mixup_alpha``), ``mixup_inputs``, the mean ``lam``
drawn (``mixup_mean_lambda``) and the share of training rows mixed with another class
(``mixup_other_class_share``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from scipy.special import betaincinv
from torch import Tensor

from nopeek.defenses.base import Defense, check_positive
from nopeek.defenses.label_dp import check_one_task
from nopeek.errors import ConfigError
from nopeek.hooks import TrainContext


def mix(t: Tensor, lam: float, perm: Tensor) -> Tensor:
    """``lam t + (1 - lam) t[perm]`` for a batch ``t`` (N, ...) and a permutation ``perm`` (N,).

    >>> mix(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 0.75, torch.tensor([1, 0]))
    tensor([[0.7500, 0.2500],
            [0.2500, 0.7500]])
    """
    return lam * t + (1 - lam) * t[perm]


class Mixup(Defense):
    """The label party trains on mixed activations and mixed labels (Zhang et al. 2018).

    ``lam`` in (0, 1) (default 0.5) or ``alpha`` > 0 (``lam ~ Beta(alpha, alpha)`` per step);
    ``inputs`` (default false): also mix the activations it receives, not only the labels.

    >>> Mixup(alpha=1, inputs=True).spec()
    'mixup:alpha=1,inputs=true'
    """

    name = "mixup"
    _NO_SUMS = {"lam": 0.0, "other": 0.0, "rows": 0, "steps": 0}  # the running sums before a step
    acts_at = "labels"
    acts_on_queries = False
    options: ClassVar[dict[str, str]] = {"lam": "float", "alpha": "float", "inputs": "bool"}
    positional = "lam"
    purpose = 12

    def __init__(
        self, *, lam: float | None = None, alpha: float | None = None, inputs: bool | None = None
    ) -> None:
        super().__init__()
        example = "e.g. --defense mixup:lam=0.5 or mixup:alpha=1"
        if lam is not None and alpha is not None:
            raise ConfigError(f"mixup takes lam (fixed) or alpha (drawn), not both; {example}")
        if lam is not None and not 0 < lam < 1:
            raise ConfigError(f"mixup lam must be in (0, 1), got {lam}; {example}")
        check_positive(self.name, "alpha", alpha, example=example)
        self.alpha = None if alpha is None else float(alpha)
        self.lam = None if alpha is not None else 0.5 if lam is None else float(lam)
        self.inputs = False if inputs is None else bool(inputs)
        self._pending: tuple[float, Tensor] | None = None
        self._sums = dict(self._NO_SUMS)

    def setup(self, ctx: TrainContext) -> None:
        check_one_task(self.name, ctx)
        self._seed_generators(ctx, "draws")
        self._pending = None
        self._sums = dict(self._NO_SUMS)

    def _draw(self, n: int, device: torch.device) -> tuple[float, Tensor]:
        """This step's ``lam`` and partner permutation (n,), from the seeded stream."""
        g = self.generator("draws")
        u = float(torch.rand((), generator=g, device=g.device))
        lam = self.lam if self.alpha is None else float(betaincinv(self.alpha, self.alpha, u))
        return lam, torch.randperm(n, generator=g, device=g.device).to(device)

    def receive(
        self, cut: str, z: Tensor, *, sender: str, training: bool
    ) -> tuple[Tensor, Tensor | None]:
        """``z`` (N, *cut_shape) mixed with this step's ``lam`` and partners while training."""
        if not (training and self.inputs):
            return z, None
        if self._pending is None:
            self._pending = self._draw(len(z), z.device)
        lam, perm = self._pending
        if len(perm) != len(z):
            raise ConfigError(
                f"mixup got activations of {len(z)} and {len(perm)} samples in one step; "
                "every sender must send the same batch"
            )
        return mix(z, lam, perm), None

    def targets(self, labels: Tensor, *, ids: Tensor | None, n_classes: int) -> Tensor:
        """The mixed one-hot labels (N, n_classes) of this step's pairs."""
        if self.inputs and self._pending is None:
            raise ConfigError(
                "mixup:inputs=true mixes what the label party receives, but it received no "
                "activation before its loss; use mixup (inputs=false) to mix the labels only"
            )
        pending = self._pending or self._draw(len(labels), labels.device)
        self._pending = None
        lam, perm = pending
        onehot = F.one_hot(labels.long(), n_classes).float()
        self._sums["lam"] += lam
        self._sums["other"] += float((labels != labels[perm]).sum())
        self._sums["rows"] += len(labels)
        self._sums["steps"] += 1
        return mix(onehot, lam, perm)

    def params(self) -> dict[str, Any]:
        return {"lam": self.lam, "alpha": self.alpha, "inputs": self.inputs}

    def metrics(self) -> dict[str, Any]:
        out = {f"mixup_{k}": v for k, v in self.params().items() if v is not None}
        if self._sums["steps"]:
            out["mixup_mean_lambda"] = self._sums["lam"] / self._sums["steps"]
            out["mixup_other_class_share"] = self._sums["other"] / self._sums["rows"]
        return out
