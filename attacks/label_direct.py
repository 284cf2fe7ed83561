"""Direct (batch-level) label inference: the label is the negative entry of the logit gradient.

Fu, Zhang, Ji, Chen, Wu, Wang, Bian, Li, "Label Inference Attacks Against Vertical Federated
Learning" (USENIX Security 2022), the direct label inference attack; Zou, Liu, Wang, Jin, Zhang,
Zhang, Yang, "Defending Batch-Level Label Inference and Replacement Attacks in Vertical Federated
Learning" (2022), batch-level label inference.

Setting: the cut is at the logits, i.e. the party receiving the gradient sends the model's
logits and the label party has no trainable layer after them (two-party VFL without a top model:
``nopeek train --topology vertical --label-party client0`` sends the logits across cut
``logits`` to client0's identity head). The gradient of the mean softmax cross-entropy with
respect to example i's logits is ``(p_i - onehot(y_i)) / N``: its only negative entry is at the
label (every ``p_ic`` is in (0, 1)). The attacker reads it off: ``predicted = argmin_c g_ic``,
per epoch, exactly and with no training.

Details the papers leave open, as chosen here: scores are ``-g`` (multi-class; higher = more
likely that class) and ``g_0 - g_1`` for binary tasks (``= 2 p_0 > 0`` for label 1, ``-2 p_1 < 0``
for label 0); the attack names the classes itself (no renaming, no orientation option); a row
with no negative entry (a defense zeroed or shifted it) still gets its argmin.

Where it does not apply it refuses in one line: a cut that does not carry ``n_classes`` values,
or a segment after the cut with trainable parameters (a top model: the gradient is then the
logit gradient back-propagated through the top, with no sign pattern to read).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from nopeek.attacks.base import LABEL, Attack, AttackInputs, LabelScores, ThreatModel
from nopeek.attacks.label import _by_epoch
from nopeek.attacks.registry import register
from nopeek.errors import ThreatModelError

if TYPE_CHECKING:
    from nopeek.config import TrainConfig

WHERE = "vertical --label-party client0, --cut logits"


def direct_labels(g: torch.Tensor) -> torch.Tensor:
    """The label each logit-gradient row (M, classes) implies: its most negative entry.

    >>> p = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    >>> direct_labels(p - torch.eye(3)[[2, 0]])
    tensor([2, 0])
    """
    return g.flatten(1).argmin(1)


def _check_logit_cut(inputs: AttackInputs, shape: tuple[int, ...]) -> None:
    """Refuse a cut that does not carry the logits, or one followed by a top model."""
    k = inputs.n_classes
    if shape != (k,):
        raise ThreatModelError(
            f"direct-label reads the label off the logits' gradient p - onehot(y), but this cut "
            f"carries {'x'.join(map(str, shape))} values, not the {k} logits; attack a cut at the "
            f"logits ({WHERE})"
        )
    try:
        tail = inputs.need("tail_architecture")()
    except ThreatModelError as exc:
        raise ThreatModelError(f"direct-label needs to know what follows the cut: {exc}") from None
    trainable = sum(p.numel() for p in tail.parameters() if p.requires_grad)
    if trainable:
        raise ThreatModelError(
            f"the segment after this cut has {trainable} trainable parameters (a top model), so "
            f"the gradient sent back is not p - onehot(y); direct-label needs the cut at the "
            f"logits ({WHERE})"
        )


@register
class DirectLabelAttack(Attack):
    """Direct label inference (Fu et al. 2022; Zou et al. 2022): labels from the sign pattern
    of the gradient at the logits, per epoch. Options: none."""

    name = "direct-label"
    kind = LABEL
    threat_model = ThreatModel(gradients=True, tail_architecture=True)
    option_keys = ()

    @classmethod
    def refusal(cls, config: TrainConfig) -> str | None:
        """Only a vertical run whose labels sit with a client sends the logits across a cut."""
        if config.topology == "vertical" and config.label_party != "server":
            return None
        run = f"a {config.topology} run"
        run += " with labels at the server" if config.topology == "vertical" else ""
        return f"direct-label needs a cut at the logits ({WHERE}), which {run} does not have"

    def run(self, inputs: AttackInputs) -> LabelScores:
        grads = inputs.need("gradients")
        _check_logit_cut(inputs, tuple(grads.tensor.shape[1:]))
        ids, scores, predicted = {}, {}, {}
        for epoch, seen in _by_epoch(grads):
            g = seen.tensor.detach().double().flatten(1)
            ids[epoch], predicted[epoch] = seen.ids.clone(), direct_labels(g)
            scores[epoch] = (g[:, 0] - g[:, 1] if inputs.n_classes == 2 else -g).float()
        one = (grads.tensor.flatten(1) < 0).sum(1).eq(1).double().mean()
        extra = {"rows_with_one_negative_entry": float(one)}  # 1.0 without a defense
        return LabelScores(ids=ids, scores=scores, predicted=predicted, extra=extra)
