"""DCAE: CAE's soft fake labels, then the gradient sent back quantised to a few levels.

Zou, Liu, Wang, Jin, Zhang, Zhang, Yang, "Defending Batch-Level Label Inference and Replacement
Attacks in Vertical Federated Learning" (IEEE Trans. Big Data 2022; VFLAIR's ``DCAE``): the label
party trains on the confusional autoencoder's fake labels (:mod:`nopeek.defenses.cae`, reused
as is) and applies DiscreteSGD to every gradient it sends back at the cut: each entry ``g`` is
replaced by the nearest of the levels ``j * 2B / bins``, ``|j| <= bins // 2`` (within ``[-B, B]``).
CAE hides which class a gradient names; the quantisation removes the small differences between
the gradients of one class that the fake labels leave (the entries that only shift within a
step), so the gradients of different examples collapse onto few distinct values.

Details the paper leaves open, as chosen here:

- the rounding is VFLAIR's ``multistep_gradient``: ``round(g / (2B / bins)) * (2B / bins)``,
  deterministic (round half to even, as :func:`torch.round`); ``bins`` defaults to its 12;
- ``B`` (``bound``) is the largest magnitude in the batch's gradient when not given (VFLAIR
  takes a fixed bound per data set, e.g. 1e-3 on Criteo, which depends on the loss's scale);
  entries beyond a given ``bound`` go to the outermost level (the reference code leaves them on
  the grid beyond it), so there are at most ``bins + 1`` levels;
- the autoencoder is CAE's, from the same seeded stream (the same ``purpose``): for one seed a
  ``dcae`` run and a ``cae`` run train the same E and D, so comparing them isolates the
  quantisation (``cae`` and ``dcae`` together are refused);
- the quantised gradient is what the data party receives and applies; no error feedback.

``metrics.json`` gains CAE's entries under ``dcae_`` (``dcae_confusion``, ``dcae_steps``,
``dcae_decoder_accuracy``, ``dcae_fake_top_other``), ``dcae_bins``, ``dcae_bound`` (None: the
batch's own) and the mean over steps of the squared quantisation error relative to the
gradient's squared norm (``dcae_quantisation_error``) and of the share of entries sent as 0
(``dcae_zero_share``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from nopeek.defenses.base import check_positive
from nopeek.defenses.cae import CAE
from nopeek.errors import ConfigError
from nopeek.hooks import TrainContext


def discretise(g: Tensor, *, bins: int, bound: float | None = None) -> Tensor:
    """DiscreteSGD's rounding of a gradient ``g`` (any shape): each entry to the nearest level
    ``j * 2B / bins``, ``|j| <= bins // 2``, with ``B = bound`` or the largest ``|g|`` (all
    zeros stay zeros).

    Why: the gradients of one class differ by small amounts that a clustering attack reads;
    on a coarse grid they coincide.

    >>> discretise(torch.tensor([0.9, -0.26, 0.1, -1.0]), bins=4)
    tensor([ 1.0000, -0.5000,  0.0000, -1.0000])
    >>> discretise(torch.tensor([3.0, 0.3]), bins=2, bound=1.0)
    tensor([1., 0.])
    """
    b = float(g.abs().max()) if bound is None else bound
    if b == 0:
        return g.clone()
    step, top = 2 * b / bins, bins // 2
    return torch.round(g / step).clamp(-top, top) * step


class DCAE(CAE):
    """CAE (the label party trains on E(onehot(y)), predicts D(softmax(logits))) followed by
    DiscreteSGD on the gradient it sends back (Zou et al. 2022).

    ``confusion``, ``steps``: CAE's; ``bins`` (default 12): the grid has ``2B / bins`` steps;
    ``bound`` (default: each batch's largest gradient magnitude): ``B``. Acts at the label
    party, on every gradient it sends back; a query to the client does not pass through it.

    >>> DCAE(bins=6).spec()
    'dcae:confusion=1,steps=2000,bins=6'
    """

    name = "dcae"
    _NO_SUMS = {"error": 0.0, "zero": 0.0, "steps": 0}  # the running sums before a step
    options: ClassVar[dict[str, str]] = CAE.options | {"bins": "float", "bound": "float"}

    def __init__(
        self,
        *,
        confusion: float | None = None,
        steps: float | None = None,
        bins: float | None = None,
        bound: float | None = None,
    ) -> None:
        super().__init__(confusion=confusion, steps=steps)
        example = "e.g. --defense dcae:bins=12"
        check_positive(self.name, "bins", bins, example=example)
        check_positive(self.name, "bound", bound, example=example)
        if bins is not None and (bins != int(bins) or bins < 2):
            raise ConfigError(f"dcae bins must be a whole number >= 2, got {bins}; {example}")
        self.bins = 12 if bins is None else int(bins)
        self.bound = None if bound is None else float(bound)
        self._sums = dict(self._NO_SUMS)

    def setup(self, ctx: TrainContext) -> None:
        super().setup(ctx)
        self._sums = dict(self._NO_SUMS)

    def backward(
        self, cut: str, grad: Tensor, *, activation: Tensor, labels: Tensor | None
    ) -> Tensor:
        """``grad`` (N, *cut_shape) on DiscreteSGD's grid, at the party holding ``labels``."""
        if labels is None:
            return grad
        q = discretise(grad, bins=self.bins, bound=self.bound)
        power = float(grad.double().pow(2).sum())
        if power > 0:
            self._sums["error"] += float((q - grad).double().pow(2).sum()) / power
        self._sums["zero"] += float((q == 0).double().mean())
        self._sums["steps"] += 1
        return q

    def params(self) -> dict[str, Any]:
        return super().params() | {"bins": self.bins, "bound": self.bound}

    def metrics(self) -> dict[str, Any]:
        out = super().metrics()
        if self._sums["steps"]:
            n = self._sums["steps"]
            out["dcae_quantisation_error"] = self._sums["error"] / n
            out["dcae_zero_share"] = self._sums["zero"] / n
        return out
