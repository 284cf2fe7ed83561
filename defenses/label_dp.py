"""Label differential privacy by randomized response, applied by the party that holds labels.

Ghazi, Golowich, Kumar, Manurangsi, Zhang, "Deep Learning with Label Differential Privacy"
(NeurIPS 2021), the RR baseline: every training label is replaced once, before it is used, by

    y~ = y with probability e^eps / (e^eps + K - 1), else each other class with 1 / (e^eps + K - 1)

which is eps-label-DP (the ratio of any output's probability under two labels is at most e^eps).
The label party then trains on y~ only, so everything it sends back (the cut gradient included)
is a function of the privatised labels, and the guarantee holds for the labels against every
other party, whatever they observe, by post-processing.

Details the paper leaves open for this setting, as chosen here:

- each sample's y~ is drawn the first time the label party sees it (by sample id) and kept:
  later epochs reuse it (drawing afresh every epoch would compose eps over the epochs);
- the draws come from the defense's seeded stream, in the order samples first appear, so a seed
  fixes them; the drawn labels travel in the checkpoint (``--resume`` keeps them);
- the paper's multi-stage RR-with-prior (RRWithPrior) and mixup are not implemented.

``metrics.json`` gains ``label_dp_epsilon``, ``label_dp_keep_probability`` (for the task's K)
and ``label_dp_flipped`` (the share of training labels that were changed).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from nopeek.defenses.base import Defense, check_positive
from nopeek.errors import ConfigError
from nopeek.hooks import TrainContext


def keep_probability(epsilon: float, n_classes: int) -> float:
    """``e^eps / (e^eps + K - 1)``: the chance that randomized response keeps a label.

    >>> keep_probability(0.0, 10)
    0.1
    >>> round(keep_probability(math.log(9), 10), 6)
    0.5
    """
    return 1.0 / (1.0 + (n_classes - 1) * math.exp(-epsilon))


def randomized_response(
    labels: Tensor, *, epsilon: float, n_classes: int, generator: torch.Generator
) -> Tensor:
    """Randomized response on ``labels`` (N,): each kept with :func:`keep_probability`, else
    replaced by one of the other ``n_classes - 1`` classes uniformly.

    >>> g = torch.Generator().manual_seed(0)
    >>> randomized_response(torch.tensor([3, 1]), epsilon=50.0, n_classes=5, generator=g)
    tensor([3, 1])
    """
    n, dev, y = len(labels), generator.device, labels.to(generator.device).long()
    keep = torch.rand(n, generator=generator, device=dev) < keep_probability(epsilon, n_classes)
    other = torch.randint(n_classes - 1, (n,), generator=generator, device=dev)
    other = other + (other >= y).long()  # skip the true class
    return torch.where(keep, y, other).to(labels.device)


def check_one_task(name: str, ctx: TrainContext) -> None:
    """Refuse a label party that trains several tasks: a defense that replaces its labels
    (``targets``) is set up for one task's labels."""
    tasks = len(getattr(ctx.parties.get(ctx.label_party), "objectives", ()))
    if tasks > 1:
        raise ConfigError(
            f"{name} replaces the labels of one task, but {ctx.label_party} trains {tasks} "
            "(multi-task); use it on single-task runs"
        )


class LabelDP(Defense):
    """Randomized response on the training labels, once per sample: eps-label-DP (Ghazi et al.).

    ``epsilon`` (required, > 0): the label-DP budget. It changes the training labels at the
    label party only, so a query to the client does not pass through it (``acts_on_queries``
    False).
    """

    name = "label-dp"
    acts_at = "labels"
    acts_on_queries = False
    options: ClassVar[dict[str, str]] = {"epsilon": "float"}
    positional = "epsilon"
    purpose = 11

    def __init__(self, *, epsilon: float | None = None) -> None:
        super().__init__()
        example = "e.g. --defense label-dp:epsilon=2"
        if epsilon is None:
            raise ConfigError(f"label-dp needs epsilon; {example}")
        check_positive(self.name, "epsilon", epsilon, example=example)
        self.epsilon = float(epsilon)
        self.n_classes: int | None = None
        self.private: dict[int, int] = {}  # sample id -> its privatised label
        self.flipped = 0

    def setup(self, ctx: TrainContext) -> None:
        check_one_task(self.name, ctx)
        self._seed_generators(ctx, "draws")
        k = ctx.extra.get("n_classes")
        self.n_classes = k if isinstance(k, int) else None
        self.private, self.flipped = {}, 0

    def targets(self, labels: Tensor, *, ids: Tensor | None, n_classes: int) -> Tensor:
        if ids is None:
            raise ConfigError("label-dp needs the samples' ids to privatise each label once")
        self.n_classes = n_classes
        keys = ids.tolist()
        fresh = [i for i, key in enumerate(keys) if key not in self.private]
        if fresh:
            rows = torch.as_tensor(fresh, device=labels.device)
            drawn = randomized_response(
                labels[rows],
                epsilon=self.epsilon,
                n_classes=n_classes,
                generator=self.generator("draws"),
            )
            for i, new in zip(fresh, drawn.tolist()):
                self.private[keys[i]] = int(new)
            self.flipped += int((drawn != labels[rows]).sum())
        return torch.as_tensor([self.private[k] for k in keys], device=labels.device)

    def params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon}

    def metrics(self) -> dict[str, Any]:
        out = {"label_dp_epsilon": self.epsilon}
        if self.n_classes is not None:
            out["label_dp_keep_probability"] = keep_probability(self.epsilon, self.n_classes)
        if self.private:
            out["label_dp_flipped"] = self.flipped / len(self.private)
        return out

    def state_dict(self) -> dict[str, Any]:
        ids = torch.as_tensor(list(self.private), dtype=torch.long)
        values = torch.as_tensor(list(self.private.values()), dtype=torch.long)
        return super().state_dict() | {"ids": ids, "labels": values, "flipped": self.flipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.private = dict(zip(state["ids"].tolist(), state["labels"].tolist()))
        self.flipped = int(state["flipped"])
