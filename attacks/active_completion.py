"""Active model completion: a data party's malicious local optimizer, then passive completion.

Fu, Zhang, Ji, Chen, Wu, Wang, Bian, Li, "Label Inference Attacks Against Vertical Federated
Learning" (USENIX Security 2022), active model completion. A malicious data party cannot change
the gradient it receives, but it runs its own optimizer. It accelerates its bottom model's
descent, so that its bottom learns the task faster than the other parties' and the top model
comes to rely on it: the bottom then carries more label information, which passive model
completion (:mod:`nopeek.attacks.completion`) afterwards extracts from a few labels.

The malicious optimizer (Fu et al.'s ``MaliciousSGD``): before each step every parameter
coordinate's gradient ``g_t`` is compared with the previous step's ``g_{t-1}`` and the step is
scaled by ``r = clip(1 + gamma * g_t / (g_{t-1} + 1e-7), 1, r_max)``: where the gradient keeps
its direction and grows, the party moves up to ``r_max`` times further.

Details that differ here or the paper leaves open:

- Fu et al. scale the gradient before a plain SGD step. The toolkit's parties use Adam, whose
  step hardly changes when the gradient is scaled, so the ratio scales the *update* instead:
  the wrapped optimizer takes its usual step, and the change of every coordinate is multiplied
  by its ``r`` (for SGD the two are the same thing);
- ``gamma`` = 1 and ``r_max`` = 5 (the reference code's defaults); ``r`` = 1 at the first step;
- it acts at every data party that does not hold the labels (in a vertical run with two
  clients both are malicious; attack one of them afterwards with ``--party``); the party's
  optimizer state (the wrapped Adam's and the last gradients) travels in the checkpoint.

Use: ``nopeek train ... --malicious-server active-completion`` (the flag names the malicious
party, whichever it is), then ``nopeek attack --attack passive-completion`` on that run;
``metrics.json`` gains ``active_completion_mean_ratio`` (the mean step scale applied).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nopeek.attacks.fsha import MALICIOUS_SERVERS
from nopeek.config import TrainConfig
from nopeek.hooks import CutHook, TrainContext

GAMMA, MAX_RATIO, EPS = 1.0, 5.0, 1e-7


def step_ratios(grad: Tensor, last: Tensor | None, *, gamma: float, max_ratio: float) -> Tensor:
    """Fu et al.'s per-coordinate scale ``clip(1 + gamma * g / (g_last + 1e-7), 1, max_ratio)``
    (all ones without a previous gradient).

    >>> step_ratios(torch.tensor([1.0, -1.0, 4.0]), torch.tensor([1.0, 1.0, 1.0]),
    ...             gamma=1.0, max_ratio=5.0).round().tolist()
    [2.0, 1.0, 5.0]
    """
    if last is None:
        return torch.ones_like(grad)
    return (1 + gamma * grad / (last + EPS)).clamp(1.0, max_ratio)


class MaliciousOptimizer:
    """Wraps a party's optimizer: each step's parameter change is scaled per coordinate by
    :func:`step_ratios` of the current and previous gradients."""

    def __init__(self, inner: Any, *, gamma: float = GAMMA, max_ratio: float = MAX_RATIO) -> None:
        self.inner, self.gamma, self.max_ratio = inner, gamma, max_ratio
        self.last: dict[int, Tensor] = {}  # parameter position -> its previous gradient
        self.ratio_sum, self.ratio_count = 0.0, 0

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.inner.param_groups

    def _params(self) -> list[torch.nn.Parameter]:
        return [p for group in self.inner.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        params = self._params()
        before = {i: p.detach().clone() for i, p in enumerate(params) if p.grad is not None}
        ratios = {}
        for i in before:
            grad = params[i].grad.detach()
            ratios[i] = step_ratios(
                grad, self.last.get(i), gamma=self.gamma, max_ratio=self.max_ratio
            )
            self.last[i] = grad.clone()
            self.ratio_sum += float(ratios[i].double().sum())
            self.ratio_count += ratios[i].numel()
        self.inner.step()
        for i, start in before.items():
            params[i].copy_(start + ratios[i] * (params[i] - start))

    def state_dict(self) -> dict[str, Any]:
        return {
            "inner": self.inner.state_dict(),
            "last": {str(i): g for i, g in self.last.items()},
            "ratio": [self.ratio_sum, self.ratio_count],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        self.last = {int(i): g for i, g in state["last"].items()}
        self.ratio_sum, self.ratio_count = float(state["ratio"][0]), int(state["ratio"][1])


class ActiveCompletion(CutHook):
    """The malicious data party of active model completion: wraps its optimizer in
    :class:`MaliciousOptimizer` (a party holding the labels is left alone)."""

    name = "active-completion"
    acts_at = "data"

    def __init__(self, *, gamma: float = GAMMA, max_ratio: float = MAX_RATIO) -> None:
        self.gamma, self.max_ratio = gamma, max_ratio
        self.optimizer: MaliciousOptimizer | None = None

    def setup(self, ctx: TrainContext) -> None:
        party = ctx.parties.get(ctx.data_party)
        self.optimizer = None
        if party is None or ctx.data_party == ctx.label_party or party.optimizer is None:
            return
        self.optimizer = MaliciousOptimizer(
            party.optimizer, gamma=self.gamma, max_ratio=self.max_ratio
        )
        party.optimizer = self.optimizer

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"active_completion_gamma": self.gamma}
        opt = self.optimizer
        if opt is not None and opt.ratio_count:
            out["active_completion_mean_ratio"] = opt.ratio_sum / opt.ratio_count
        return out


@MALICIOUS_SERVERS.decorator(ActiveCompletion.name)
def _active_completion_from_config(config: TrainConfig) -> ActiveCompletion:
    """Active model completion's malicious data party (its optimizer; no options)."""
    return ActiveCompletion()
