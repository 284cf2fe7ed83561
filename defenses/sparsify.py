"""Gradient sparsification: the label party sends back only the largest gradient entries.

Gradient sparsification (GS) is a compression that doubles as a label defense in the VFL
benchmarks (VFLAIR, Zou et al.'s batch-level label inference experiments; SecretFlow's
``TopkSparse`` compressor): of the gradient ``(N, *cut_shape)`` the label party sends back at the
cut, only the ``keep`` fraction of entries with the largest magnitude is sent, the rest is set to
zero. The attacker's gradients lose their small entries, which carry much of the direction of
the label-dependent part; the large ones (and so most of the norm) stay.

Details the papers leave open, as chosen here:

- ``keep`` is the fraction *kept* (VFLAIR's ``gradient_sparse_rate`` is the percentage dropped:
  rate 99 is ``keep=0.01``); each row keeps ``ceil(keep * d)`` entries (at least one), a batch
  ``ceil(keep * N * d)``;
- ``per=sample`` (default) ranks each example's row on its own, so every example keeps the same
  number of entries; ``per=batch`` ranks the whole batch at once (examples with small gradients
  may keep nothing, as a per-tensor threshold does);
- ties at the threshold are broken by :func:`torch.topk`, so exactly that many entries survive;
- kept entries are sent unchanged (no rescaling, no error feedback).

``metrics.json`` gains ``grad_sparsify_keep``, ``grad_sparsify_per`` and the mean squared norm
removed per example (``grad_sparsify_noise_power``) next to the gradient's
(``grad_sparsify_grad_power``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from nopeek.defenses.base import check_positive
from nopeek.defenses.label_gradient import LabelGradientDefense
from nopeek.errors import ConfigError

PER = ("sample", "batch")


def top_k_mask(g: Tensor, k: int) -> Tensor:
    """A boolean mask of ``g``'s shape with exactly ``k`` True per row of ``g`` (N, d): the
    ``k`` entries of largest magnitude.

    >>> top_k_mask(torch.tensor([[0.1, -3.0, 2.0], [5.0, 0.0, -1.0]]), 1)
    tensor([[False,  True, False],
            [ True, False, False]])
    """
    idx = g.abs().topk(k, dim=1).indices
    return torch.zeros_like(g, dtype=torch.bool).scatter_(1, idx, True)


def sparsify(g: Tensor, *, keep: float, per: str) -> Tensor:
    """``g`` (N, d) with all but the ``keep`` fraction of largest-magnitude entries zeroed:
    ``ceil(keep * d)`` per row (``per="sample"``) or ``ceil(keep * N * d)`` over the batch.

    >>> sparsify(torch.tensor([[1.0, -4.0], [0.5, 3.0]]), keep=0.5, per="batch")
    tensor([[ 0., -4.],
            [ 0.,  3.]])
    """
    if per == "sample":
        mask = top_k_mask(g, max(1, math.ceil(keep * g.shape[1])))
    else:
        mask = top_k_mask(g.reshape(1, -1), max(1, math.ceil(keep * g.numel()))).reshape(g.shape)
    return torch.where(mask, g, torch.zeros_like(g))


class GradientSparsification(LabelGradientDefense):
    """Keep the ``keep`` fraction of largest-magnitude entries of the gradient sent back.

    ``keep`` in (0, 1] (default 0.1; 1 sends everything), ``per`` ``sample`` (default) or
    ``batch``. Applied by the label party, on every gradient it sends back (any class count);
    a query to the client does not pass through it (``acts_on_queries`` False).
    """

    name = "grad-sparsify"
    options: ClassVar[dict[str, str]] = {"keep": "float", "per": "sample|batch"}
    positional = "keep"
    purpose = 8

    def __init__(self, *, keep: float | None = None, per: str | None = None) -> None:
        super().__init__()
        example = "e.g. --defense grad-sparsify:keep=0.1"
        check_positive(self.name, "keep", keep, example=example)
        if keep is not None and keep > 1:
            raise ConfigError(
                f"{self.name} keep is the fraction kept, in (0, 1], got {keep}; {example}"
            )
        if per is not None and per not in PER:
            raise ConfigError(f"{self.name} per must be one of {', '.join(PER)}, got {per!r}")
        self.keep = 0.1 if keep is None else float(keep)
        self.per = per or "sample"

    def noise(self, g: Tensor, labels: Tensor) -> tuple[Tensor, float]:
        """What sparsifying adds: minus every dropped entry (so ``g + eta`` is exact)."""
        eta = sparsify(g, keep=self.keep, per=self.per) - g
        return eta, float(eta.double().pow(2).sum(1).mean())

    def params(self) -> dict[str, Any]:
        return {"keep": self.keep, "per": self.per}
