"""MID: a variational information bottleneck at the cut, on the label party's side.

Zou, Liu, Jin, Ye, Ding, Zhang, Liu, "Mutual Information Regularization for Vertical Federated
Learning" (2023; VFLAIR's ``MID``). The party holding the labels passes every activation it
receives from another party through a variational bottleneck before its own segment reads it:

    (mu, s) = encoder(h),   sigma = softplus(s - 0.5),   t = mu + sigma * eps,   h' = decoder(t)

with ``eps ~ N(0, I)``, and adds ``weight * KL(N(mu, var) || N(0, I))`` (mean over the batch,
summed over the bottleneck's dimensions) to its loss. The bottleneck is trained with the task by
the label party; it bounds the mutual information between what the data party sends and what
the label party's model uses, so the gradient sent back (through the bottleneck, into ``h``)
carries less about the labels. Outside training ``t = mu`` (no sampling).

Details the paper leaves open, as chosen here:

- one bottleneck per received activation (cut and sender): in a vertical run each client's
  embedding gets its own, as in the paper's multi-party setting;
- encoder and decoder are MLPs with one hidden ReLU layer of width ``2 * dim`` on the flattened
  activation (``d`` values); the bottleneck has ``dim`` dimensions (default ``min(d, 64)``; the
  reference code uses ``d``); the standard deviation is ``softplus(s - 0.5)`` as in the reference
  code (about 0.47 at the start, so the first steps are not drowned in unit noise); the
  decoder's output is reshaped to the activation's shape, so the segment after it is unchanged;
- the layers are built at the first activation received (their input size is the cut's), from
  the ``defense.layers`` stream, and trained by Adam with the run's learning rate, stepped once
  per training step after the label party's backward pass (when it sends the gradients back);
- ``weight`` is the paper's lambda (default 0.01; the reference code sweeps 1e-9 ... 1e2). On
  digits (30 epochs, 500 samples) 0.01 costs 4 points of accuracy and 0.1 stops learning.

Where it sits in the hooks API: :meth:`~nopeek.hooks.CutHook.receive` (the receiving party
transforms the leaf it received, so the gradient of that leaf, sent back, flows through the
bottleneck) and its KL term joins the party's loss from there. The layers and their optimizer
travel in the hook's state (the checkpoint's ``hooks``), so ``--resume`` and ``nopeek infer`` use
the trained bottleneck. ``metrics.json`` gains ``mid_weight``, ``mid_dim`` (the first
bottleneck's) and ``mid_kl`` (mean KL per step).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nopeek.defenses.base import Defense, check_positive
from nopeek.errors import ConfigError
from nopeek.hooks import TrainContext
from nopeek.seeding import seeded


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` summed over dimensions, mean over the batch (N, k).

    >>> float(gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)))
    0.0
    >>> round(float(gaussian_kl(torch.ones(1, 2), torch.zeros(1, 2))), 6)
    1.0
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()


STD_SHIFT = 0.5  # sigma = softplus(s - 0.5), as in the reference code


class Bottleneck(nn.Module):
    """Encoder to (mu, sigma) of ``dim`` dimensions, reparameterised sample, decoder back to
    the activation's ``d`` values; ``forward(h, eps)`` -> (h' of h's shape, mu, log var)."""

    def __init__(self, d: int, dim: int) -> None:
        super().__init__()
        hidden = 2 * dim
        self.d, self.dim = d, dim
        self.encoder = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 2 * dim))
        self.decoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, d))

    def forward(self, h: Tensor, eps: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        mu, s = self.encoder(h.flatten(1)).chunk(2, dim=1)
        sigma = F.softplus(s - STD_SHIFT)
        t = mu if eps is None else mu + sigma * eps
        return self.decoder(t).reshape(h.shape), mu, 2 * sigma.clamp_min(1e-12).log()


class MID(Defense):
    """A variational bottleneck on every activation the label party receives (Zou et al.).

    ``weight``: the KL weight lambda (default 0.01); ``dim``: the bottleneck's size (default
    ``min(d, 64)`` for a cut of ``d`` values).

    The bottleneck is the label party's, applied to what it *receives*: the client sends its
    segment's output as is, so a query to the client does not pass through it
    (``acts_on_queries`` False).
    """

    name = "mid"
    acts_at = "labels"
    acts_on_queries = False
    options: ClassVar[dict[str, str]] = {"weight": "float", "dim": "float"}
    positional = "weight"
    purpose = 9

    def __init__(self, *, weight: float | None = None, dim: float | None = None) -> None:
        super().__init__()
        example = "e.g. --defense mid:weight=0.01"
        check_positive(self.name, "weight", weight, example=example)
        check_positive(self.name, "dim", dim, example=example)
        if dim is not None and dim != int(dim):
            raise ConfigError(f"mid dim is a number of dimensions, got {dim}; {example},dim=32")
        self.weight = 0.01 if weight is None else float(weight)
        self.dim = None if dim is None else int(dim)
        self.nets: dict[str, Bottleneck] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending = False
        self._seed, self._lr, self._device = 0, 1e-3, torch.device("cpu")
        self._kl, self._steps = 0.0, 0

    def setup(self, ctx: TrainContext) -> None:
        self._seed_generators(ctx, "noise")
        party = ctx.parties.get(ctx.label_party)
        self._seed, self._lr = ctx.seed, float(getattr(party, "lr", 1e-3))
        self._device = torch.device(ctx.device)
        self.nets, self.optimizer, self._pending = {}, None, False
        self._kl, self._steps = 0.0, 0

    def _net(self, key: str, d: int) -> Bottleneck:
        """The bottleneck of ``key`` (cut and sender), built at its first activation."""
        if key not in self.nets:
            cut, sender = key.split("|")
            dim = self.dim or min(d, 64)
            with seeded(self._seed, "defense.layers", self.purpose, self.party_index, cut, sender):
                net = Bottleneck(d, dim).to(self._device)
            self.nets[key] = net
            if self.optimizer is None:
                self.optimizer = torch.optim.Adam(net.parameters(), lr=self._lr)
            else:
                self.optimizer.add_param_group({"params": list(net.parameters())})
        return self.nets[key]

    def receive(
        self, cut: str, z: Tensor, *, sender: str, training: bool
    ) -> tuple[Tensor, Tensor | None]:
        net = self._net(f"{cut}|{sender}", math.prod(z.shape[1:]))
        net.train(training)
        if not training:
            return net(z, None)[0], None
        eps = torch.randn(
            (len(z), net.dim), generator=self.generator("noise"), device=z.device, dtype=z.dtype
        )
        out, mu, logvar = net(z, eps)
        kl = gaussian_kl(mu, logvar)
        self._kl += float(kl.detach())
        self._steps += 1
        self._pending = True
        return out, self.weight * kl

    def backward(
        self, cut: str, grad: Tensor, *, activation: Tensor, labels: Tensor | None
    ) -> Tensor:
        """After the label party's backward pass (its gradients are complete): one Adam step
        of the bottlenecks; the gradient itself already flowed through them."""
        if self._pending and self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self._pending = False
        return grad

    def params(self) -> dict[str, Any]:
        first = next(iter(self.nets.values()), None)
        return {"weight": self.weight, "dim": first.dim if first is not None else self.dim}

    def metrics(self) -> dict[str, Any]:
        out = {f"mid_{k}": v for k, v in self.params().items() if v is not None}
        return out | {"mid_kl": self._kl / max(self._steps, 1)}

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {
            "nets": {k: (n.d, n.dim, n.state_dict()) for k, n in self.nets.items()},
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "kl": self._kl,
            "steps": self._steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.nets, self.optimizer = {}, None
        for key, (d, dim, weights) in state["nets"].items():
            saved, self.dim = self.dim, dim
            self._net(key, d).load_state_dict(weights)
            self.dim = saved
        if state["optimizer"] is not None and self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self._kl, self._steps = float(state["kl"]), int(state["steps"])
