"""CAE: the label party trains on soft fake labels from a confusional autoencoder.

Zou, Liu, Wang, Jin, Zhang, Zhang, Yang, "Defending Batch-Level Label Inference and Replacement
Attacks in Vertical Federated Learning" (IEEE Trans. Big Data 2022; VFLAIR's ``CAE``). Before
training, the label party trains an autoencoder on labels alone: an encoder E maps a label
distribution y (N, K) to a soft fake label E(y), a decoder D maps it back, with

    L = 10 * CE(D(E(y)), y) - lambda * H(E(y)) - CE(E(y), y)

(CE(p, y) = -sum y log p): D must decode, E(y) should be high-entropy and put little mass on the
true class. During training the label party's loss compares its logits with E(onehot(y)), so the
gradient it sends back at the cut is ``p - E(onehot(y))`` instead of ``p - onehot(y)``: its most
negative entry no longer names the label. Its predictions are decoded, ``D(softmax(logits))``.

Details the paper leaves open, as chosen here:

- E and D are ``Linear(K, 6K + 2) -> ReLU -> Linear(6K + 2, K) -> softmax`` (the reference
  code's width), trained for ``steps`` (default 2000) Adam steps (lr 1e-3) on batches of 128
  random labels ``softmax(u)^(1/T)`` renormalised, ``u ~ U(0, 1)^K``, T = 0.025 (nearly one-hot,
  as the reference code draws them), from the defense's seeded streams;
- ``lambda`` is ``confusion`` (default 1; the paper sweeps 0.1 ... 2);
- the last term is unbounded (E(y)'s mass on the true class can go to 0), so it reads
  ``CE`` with E(y) clipped at 1e-4: it stops pushing once that mass is below 1e-4;
- predictions are ``log D(softmax(logits))``, so evaluation's argmax and softmax read the
  decoded classes. DCAE (CAE followed by DiscreteSGD) is :mod:`nopeek.defenses.dcae`.

E(onehot(k)) is the same for every example of class k, so the fake labels are a fixed recoding
of the classes: an attacker that only groups gradients (clustering, scored up to a renaming of
the classes) is not hindered by it, one that names the classes from the gradient's sign is.

``metrics.json`` gains ``cae_confusion``, ``cae_steps``, the decoder's accuracy on the K one-hot
labels (``cae_decoder_accuracy``, 1 when the round trip works) and the share of classes whose
fake label's top class is another class (``cae_fake_top_other``).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nopeek.defenses.base import Defense, check_positive
from nopeek.defenses.label_dp import check_one_task
from nopeek.errors import ConfigError
from nopeek.hooks import TrainContext
from nopeek.seeding import generator, seeded

log = logging.getLogger(__name__)

SHARPEN_T = 0.025
BATCH = 128
CLIP = 1e-4


def _net(k: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(k, 6 * k + 2), nn.ReLU(), nn.Linear(6 * k + 2, k), nn.Softmax(1))


def soft_cross_entropy(p: Tensor, y: Tensor, *, floor: float = 1e-12) -> Tensor:
    """``mean_i -sum_c y_ic log max(p_ic, floor)`` for distributions p, y (N, K).

    >>> round(float(soft_cross_entropy(torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 0.0]]))), 4)
    0.6931
    """
    return -(y * p.clamp_min(floor).log()).sum(1).mean()


def random_labels(n: int, k: int, generator: torch.Generator) -> Tensor:
    """``n`` nearly one-hot label distributions (n, k): softmax of uniforms, sharpened."""
    p = torch.rand((n, k), generator=generator).softmax(1).pow(1 / SHARPEN_T)
    return p / p.sum(1, keepdim=True)


class ConfusionalAutoencoder(nn.Module):
    """E and D of :mod:`nopeek.defenses.cae` for ``k`` classes."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.encoder, self.decoder = _net(k), _net(k)

    def loss(self, y: Tensor, confusion: float) -> Tensor:
        fake = self.encoder(y)
        entropy = -(fake * fake.clamp_min(1e-12).log()).sum(1).mean()
        decoded = soft_cross_entropy(self.decoder(fake), y)
        return 10 * decoded - confusion * entropy - soft_cross_entropy(fake, y, floor=CLIP)

    def fit(self, *, confusion: float, steps: int, generator: torch.Generator) -> None:
        opt = torch.optim.Adam(self.parameters(), lr=1e-3)
        for _ in range(steps):
            loss = self.loss(random_labels(BATCH, self.k, generator), confusion)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)


class CAE(Defense):
    """The label party trains on E(onehot(y)) and predicts D(softmax(logits)) (Zou et al.).

    ``confusion``: lambda, the entropy weight (default 1); ``steps``: the autoencoder's training
    steps before the split training starts (default 2000).

    It acts at the label party (its labels and predictions), not on what the data party sends:
    a query to the client does not pass through it (``acts_on_queries`` False).
    """

    name = "cae"
    acts_at = "labels"
    acts_on_queries = False
    options: ClassVar[dict[str, str]] = {"confusion": "float", "steps": "float"}
    positional = "confusion"
    purpose = 10

    def __init__(self, *, confusion: float | None = None, steps: float | None = None) -> None:
        super().__init__()
        example = f"e.g. --defense {self.name}:confusion=1,steps=2000"
        check_positive(self.name, "confusion", confusion, example=example)
        check_positive(self.name, "steps", steps, example=example)
        if steps is not None and steps != int(steps):
            raise ConfigError(f"{self.name} steps must be a whole number, got {steps}; {example}")
        self.confusion = 1.0 if confusion is None else float(confusion)
        self.steps = 2000 if steps is None else int(steps)
        self.autoencoder: ConfusionalAutoencoder | None = None

    def setup(self, ctx: TrainContext) -> None:
        check_one_task(self.name, ctx)
        k = ctx.extra.get("n_classes")
        if not isinstance(k, int) or k < 2:
            raise ConfigError(f"{self.name} needs the number of classes before training, got {k!r}")
        # trained on the CPU before the run starts: its draws come from a CPU generator
        draws = generator(ctx.seed, "defense.noise", self.purpose, self.party_index, 0)
        with seeded(ctx.seed, "defense.layers", self.purpose, self.party_index, "", ""):
            self.autoencoder = ConfusionalAutoencoder(k)
        with torch.enable_grad():
            self.autoencoder.fit(confusion=self.confusion, steps=self.steps, generator=draws)
        self.autoencoder.to(ctx.device)
        accuracy, _ = self.round_trip()
        if accuracy < 1.0:
            log.warning(
                "%s: the decoder recovers %.0f%% of the %d classes after %d steps; predictions "
                "of the others decode wrongly (raise its steps)",
                self.name,
                100 * accuracy,
                k,
                self.steps,
            )

    def _ae(self, n_classes: int) -> ConfusionalAutoencoder:
        if self.autoencoder is None:
            raise RuntimeError(f"{self.name}: call setup(ctx) before training")
        if n_classes != self.autoencoder.k:
            raise ConfigError(
                f"{self.name} was trained for {self.autoencoder.k} classes but an objective has "
                f"{n_classes}; use {self.name} on single-task runs"
            )
        return self.autoencoder

    def targets(self, labels: Tensor, *, ids: Tensor | None, n_classes: int) -> Tensor:
        ae = self._ae(n_classes)
        onehot = F.one_hot(labels.long(), n_classes).to(next(ae.parameters()).dtype)
        return ae.encoder(onehot).detach()

    def predict(self, logits: Tensor) -> Tensor:
        ae = self._ae(logits.shape[1])
        return ae.decoder(logits.softmax(1).to(next(ae.parameters()).dtype)).clamp_min(1e-12).log()

    @torch.no_grad()
    def round_trip(self) -> tuple[float, float]:
        """(decoder accuracy on the K one-hot labels, share of fake labels whose top class is
        another class)."""
        if self.autoencoder is None:
            raise RuntimeError(f"{self.name}: call setup(ctx) before training")
        ae = self.autoencoder
        eye = torch.eye(ae.k, device=next(ae.parameters()).device)
        fake = ae.encoder(eye)
        classes = torch.arange(ae.k, device=eye.device)
        decoded = ae.decoder(fake).argmax(1)
        return float((decoded == classes).float().mean()), float(
            (fake.argmax(1) != classes).float().mean()
        )

    def params(self) -> dict[str, Any]:
        return {"confusion": self.confusion, "steps": self.steps}

    def metrics(self) -> dict[str, Any]:
        prefix = self.name.replace("-", "_")
        out = {f"{prefix}_{k}": v for k, v in self.params().items()}
        if self.autoencoder is not None:
            accuracy, other = self.round_trip()
            out |= {f"{prefix}_decoder_accuracy": accuracy, f"{prefix}_fake_top_other": other}
        return out

    def state_dict(self) -> dict[str, Any]:
        ae = self.autoencoder
        return super().state_dict() | {"autoencoder": None if ae is None else ae.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state["autoencoder"] is not None and self.autoencoder is not None:
            self.autoencoder.load_state_dict(state["autoencoder"])
