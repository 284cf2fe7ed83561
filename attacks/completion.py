"""Passive model completion: a data party turns its own bottom model into a label classifier.

Fu, Zhang, Ji, Chen, Wu, Wang, Bian, Li, "Label Inference Attacks Against Vertical Federated
Learning" (USENIX Security 2022), passive model completion. A data party without labels trained
its bottom model (its segment up to the cut) with the others; that bottom has learnt features
that separate the classes. After training, the attacker puts a small head on a copy of its own
trained bottom and fine-tunes both on a few labelled samples it knows (its auxiliary data with
labels), then labels every training sample it holds (its own inputs of them) with the completed
model. No message of the run is needed: only its own weights, its own data and a few labels.

Threat model (``ThreatModel``): ``client_weights`` (its own trained segment, white-box),
``aux_data`` + ``aux_labels`` (the few labelled samples; ``--aux-size`` sets how many, a stratified
draw), ``own_train_inputs`` (its own inputs of the training samples: the victims).

Details the paper leaves open or that differ here:

- semi-supervised learning: Fu et al. fine-tune with MixMatch, whose augmentations are defined
  for images and text. Here it is plain fine-tuning plus self-training (pseudo-labels): fit on
  the labelled samples for ``steps`` Adam steps (default 300, minibatches of up to 64), then for
  each of ``rounds`` rounds (default 2) add every victim the model labels with probability at
  least ``threshold`` (default 0.9) under that label, and fit ``steps`` more steps on both;
- the head: flatten, Linear(d, 64), ReLU, Linear(64, classes), from the ``attack.completion``
  stream; the bottom keeps its trained weights as the start and is fine-tuned at a tenth of
  the head's learning rate (``lr``, default 1e-3), or not at all with ``freeze=true``; it stays
  in eval mode (batch-norm statistics and dropout as trained);
- victims: every training sample (``--n-samples`` keeps those with the smallest ids); the
  result is one round, reported as epoch 0, with hard guesses (``accuracy``);
- ``bottom=fresh`` runs the same procedure on a freshly initialised bottom of the same
  architecture (``client_architecture``): what a few labels and the attacker's own features
  give without anything the run taught the bottom. The difference to ``bottom=trained`` is what
  the split training leaked into the data party's model.

The active variant (``nopeek train --malicious-server active-completion``) makes the bottom carry
more label information during training first (:mod:`nopeek.attacks.active_completion`).
"""

from __future__ import annotations

import copy
import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nopeek.attacks.base import LABEL, Attack, AttackInputs, LabelScores, ThreatModel
from nopeek.attacks.registry import register
from nopeek.data import Split
from nopeek.errors import ConfigError, ThreatModelError
from nopeek.seeding import generator, seeded

log = logging.getLogger(__name__)

HIDDEN, BATCH = 64, 64
BOTTOMS = ("trained", "fresh")


def _head(cut_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    d = math.prod(cut_shape)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(d, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, n_classes)
    )


@torch.no_grad()
def _probabilities(model: nn.Module, x: Tensor, batch: int = 512) -> Tensor:
    """Softmax outputs (N, classes) of ``model`` on ``x``, in batches."""
    return torch.cat([model(x[i : i + batch]).softmax(1) for i in range(0, len(x), batch)])


def _fit(model: nn.Module, opt, x: Tensor, y: Tensor, *, steps: int, gen: torch.Generator):
    """``steps`` Adam steps of cross-entropy on minibatches of (x, y) drawn with ``gen``."""
    loss = torch.zeros(())
    for _ in range(steps):
        idx = torch.randperm(len(x), generator=gen)[:BATCH]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())


class _Completed(nn.Module):
    """The attacker's completed model: its trained bottom (eval mode), then the new head."""

    def __init__(self, bottom: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.bottom, self.head = bottom, head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.bottom(x))


@register
class PassiveCompletion(Attack):
    """Passive model completion (Fu et al. 2022): fine-tune own bottom + head on a few labels.

    Options: ``rounds`` (self-training rounds, 2), ``threshold`` (0.9), ``lr`` (1e-3),
    ``freeze`` (false: the bottom is fine-tuned too), ``bottom`` (``trained``, or ``fresh``: the
    no-leak reference); ``steps`` per fit (300).
    """

    name = "passive-completion"
    kind = LABEL
    threat_model = ThreatModel(
        client_weights=True,
        client_architecture=True,
        aux_data=True,
        aux_labels=True,
        own_train_inputs=True,
    )
    option_keys = ("rounds", "threshold", "lr", "freeze", "bottom")
    search_space = {"rounds": (2, 0, 4), "freeze": (False, True)}
    default_steps = 300

    def _bottom(self, inputs: AttackInputs) -> nn.Module:
        """The trained bottom (``bottom=trained``) or a fresh one of its architecture."""
        which = inputs.options.get("bottom", "trained")
        if which not in BOTTOMS:
            raise ConfigError(f"passive-completion bottom must be trained or fresh, got {which!r}")
        if which == "fresh":
            return inputs.need("client_architecture")().eval()
        return copy.deepcopy(inputs.need("client_segment")).eval()

    def _settings(self, inputs: AttackInputs) -> tuple[int, int, float, float, bool]:
        o = inputs.options
        steps = self.default_steps if inputs.steps is None else int(inputs.steps)
        rounds, threshold = int(o.get("rounds", 2)), float(o.get("threshold", 0.9))
        lr, freeze = float(o.get("lr", 1e-3)), o.get("freeze", False)
        if steps < 1 or rounds < 0 or not 0 < threshold <= 1 or not lr > 0:
            raise ConfigError(
                f"passive-completion needs steps >= 1, rounds >= 0, 0 < threshold <= 1 and "
                f"lr > 0, got {steps}, {rounds}, {threshold}, {lr}"
            )
        if not isinstance(freeze, bool):
            raise ConfigError(f"passive-completion freeze is true or false, got {freeze!r}")
        return steps, rounds, threshold, lr, freeze

    def run(self, inputs: AttackInputs) -> LabelScores:
        steps, rounds, threshold, lr, freeze = self._settings(inputs)
        own: Split = inputs.need("own_train_inputs")
        aux: Split = inputs.need("aux")
        if len(aux) == 0 or bool((aux.y < 0).any()):
            raise ThreatModelError("passive-completion needs labelled auxiliary samples")
        bottom = self._bottom(inputs)
        with torch.no_grad():
            cut_shape = tuple(bottom(aux.x[:2]).shape[1:])
        with seeded(inputs.seed, "attack.completion", "init"):
            head = _head(cut_shape, inputs.n_classes)
        model = _Completed(bottom, head)
        for p in bottom.parameters():
            p.requires_grad_(not freeze)
        groups = [{"params": list(head.parameters()), "lr": lr}]
        if not freeze:
            groups.append({"params": list(bottom.parameters()), "lr": lr / 10})
        opt = torch.optim.Adam(groups)
        gen = generator(inputs.seed, "attack.completion", "batches")
        x, y = aux.x.float(), aux.y.long()
        loss = _fit(model, opt, x, y, steps=steps, gen=gen)
        pseudo = 0
        for _ in range(rounds):
            probs = _probabilities(model, own.x.float())
            sure = probs.max(1).values >= threshold
            pseudo = int(sure.sum())
            xs = torch.cat([x, own.x.float()[sure]])
            ys = torch.cat([y, probs.argmax(1)[sure]])
            loss = _fit(model, opt, xs, ys, steps=steps, gen=gen)
        probs = _probabilities(model, own.x.float())
        log.info("passive-completion: %d labelled, %d pseudo-labelled", len(aux), pseudo)
        scores = probs[:, 1] if inputs.n_classes == 2 else probs
        extra = {
            "labelled": len(aux),
            "pseudo_labelled": pseudo,
            "rounds": rounds,
            "threshold": threshold,
            "freeze": freeze,
            "bottom": inputs.options.get("bottom", "trained"),
            "fit_loss": loss,
        }
        return LabelScores({0: own.ids.clone()}, {0: scores}, {0: probs.argmax(1)}, extra)
