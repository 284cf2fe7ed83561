"""Adversarial training against a simulated inversion attacker (an attacker-aware defense).

The data party keeps a decoder of its own, a stand-in for a model-inversion attacker, and plays
a min-max game with it on its own batches (adversarial representation learning; ResSFL, Li et
al., CVPR 2022). At every training step, for a batch ``x`` (N, *input_shape) and the message it
sends ``z`` (N, *cut_shape, as sent: after any clipping or noise of the defenses before it):

1. **decoder step** (``steps`` Adam updates, ``lr``): minimise ``||D(z) - x||^2`` over the batch,
   with ``z`` detached: the decoder learns to invert the current client segment;
2. **client step**: the client adds ``weight * max(0, R^2)`` to its loss, where
   ``R^2 = 1 - sum_i ||D(z_i) - x_i||^2 / sum_i ||x_i - mean(x)||^2`` is the updated decoder's
   coefficient of determination on the batch, with the decoder's weights held fixed; the
   gradient flows through ``z`` into the client segment only.

Why the clipped R^2 and not the plain ``-weight * MSE``: ``R^2 = 0`` is the error of a blind guess
(the batch mean for every sample), and past it a worse reconstruction protects nothing: the
client would learn to make *this* decoder wrong in a systematic way (say, inverted images) that a
freshly trained attacker undoes, and an unbounded ``-MSE`` can outweigh the task loss. The
clipped term is in [0, weight], on the scale of the cross-entropy, and zero once the simulated
attacker does no better than guessing the mean.

The decoder lives with the data party (``acts_at = "data"``; one decoder per client in
multi-client topologies) and sees only that party's own batch ``(x, z)``: the party calls
:meth:`~nopeek.hooks.CutHook.penalty` with its own data view and nothing else (no labels, no
other party's data, no test or auxiliary data). It is the client's own stand-in, smaller than the
attacks' decoders: ``decoder=mlp`` (a two-hidden-layer MLP, width 256) or ``conv`` (a 3x3
convolution, one stride-2 transposed convolution per doubling, a 3x3 convolution; width 32),
``auto`` = ``conv`` for spatial cuts of images, else ``mlp``. Spec::

    --defense adversarial:weight=1,decoder=conv,steps=1,lr=1e-3,width=32
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nopeek.defenses.base import Defense, check_positive
from nopeek.errors import ConfigError
from nopeek.hooks import TrainContext
from nopeek.seeding import seeded

DECODERS = ("auto", "mlp", "conv")
_EXAMPLE = "e.g. --defense adversarial:weight=1,decoder=conv"
_R2_WINDOW = 50  # steps averaged in the reported decoder R^2
_WIDTH = {"conv": 32, "mlp": 256}  # default widths: a step costs about what the client's does


class _Reshape(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, t: Tensor) -> Tensor:
        return t.reshape(len(t), *self.shape)


class _Resize(nn.Module):
    """Nearest-neighbour resize of (N, C, h, w) maps to exactly ``size``."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def forward(self, t: Tensor) -> Tensor:
        return t if tuple(t.shape[-2:]) == self.size else F.interpolate(t, size=self.size)


def build_decoder(
    kind: str, x_shape: tuple[int, ...], z_shape: tuple[int, ...], width: int
) -> nn.Module:
    """A decoder from messages (N, *z_shape) to inputs (N, *x_shape).

    ``mlp``: flatten, two hidden ReLU layers of ``width``, a linear output reshaped to
    ``x_shape``. ``conv`` (z (C, h, w) and x (c, H, W) only): a 3x3 conv, one stride-2
    transposed conv per doubling from h to H, a nearest resize to exactly (H, W), a 3x3 conv.
    Outputs are unconstrained (MSE on any data scale).

    >>> build_decoder("conv", (1, 8, 8), (32, 4, 4), 16)(torch.zeros(2, 32, 4, 4)).shape
    torch.Size([2, 1, 8, 8])
    """
    if kind == "conv":
        (c_in, h_in, _), (c_out, h, w) = z_shape, x_shape
        layers: list[nn.Module] = [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU()]
        for _ in range(max(0, math.ceil(math.log2(h / h_in))) if h_in < h else 0):
            layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU()]
        return nn.Sequential(*layers, _Resize((h, w)), nn.Conv2d(width, c_out, 3, padding=1))
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(z_shape), width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, math.prod(x_shape)),
        _Reshape(x_shape),
    )


def r_squared(x_hat: Tensor, x: Tensor) -> Tensor:
    """``1 - sum ||x_hat - x||^2 / sum ||x - mean(x)||^2`` over a batch (N, ...) -> scalar.

    1 for a perfect reconstruction, 0 for the batch mean guessed for every sample, negative for
    worse; a batch without spread (N = 1, or identical samples) gives a large negative number.

    >>> x = torch.tensor([[0.0], [2.0]])
    >>> float(r_squared(x, x)), float(r_squared(torch.ones(2, 1), x))
    (1.0, 0.0)
    """
    x, x_hat = x.reshape(len(x), -1), x_hat.reshape(len(x), -1)
    spread = (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)
    return 1 - (x_hat - x).pow(2).sum() / spread


class Adversarial(Defense):
    """The data party trains against its own simulated inversion decoder (module docstring).

    ``weight`` (> 0, default 1) scales the clipped R^2 term in the client's loss; ``decoder``
    (``auto``/``mlp``/``conv``), ``width`` (32 for conv, 256 for mlp), ``steps`` (decoder
    updates per client step, 1) and ``lr`` (1e-3) shape the simulated attacker. Combine freely
    with the other defenses: with cut noise before it in the ``--defense`` order, the decoder sees
    the noisy message, as a real attacker would. ``metrics.json`` gains
    ``adversarial_decoder_r2``: the simulated decoder's R^2 on the client's batches (before
    clipping), mean of the last 50 steps.

    It acts through the client's training loss only (:meth:`penalty`); what the trained client
    sends, and so what answers an attacker's query, is its segment's output as is
    (``acts_on_queries`` False).
    """

    name = "adversarial"
    acts_at = "data"
    acts_on_queries = False
    options: ClassVar[dict[str, str]] = {
        "weight": "float",
        "decoder": "|".join(DECODERS),
        "width": "float",
        "steps": "float",
        "lr": "float",
    }
    positional = "weight"
    purpose = 7
    couples_batch: ClassVar[bool] = True  # the decoder and R^2's spread use the whole batch

    def __init__(
        self,
        *,
        weight: float = 1.0,
        decoder: str = "auto",
        width: float | None = None,
        steps: float = 1,
        lr: float = 1e-3,
    ) -> None:
        super().__init__()
        for key, value in (("weight", weight), ("lr", lr), ("width", width), ("steps", steps)):
            check_positive(self.name, key, value, example=_EXAMPLE)
        for key, value in (("width", width), ("steps", steps)):
            if value is not None and value != int(value):
                raise ConfigError(f"adversarial {key} must be a whole number, got {value}")
        if decoder not in DECODERS:
            raise ConfigError(f"adversarial decoder must be one of {', '.join(DECODERS)}")
        self.weight, self.kind, self.lr = float(weight), decoder, float(lr)
        self.width = None if width is None else int(width)
        self.steps = int(steps)
        self.decoder: nn.Module | None = None
        self._optim: torch.optim.Optimizer | None = None
        self._shapes: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        self._seed = 0
        self._device: Any = "cpu"
        self._r2: deque[float] = deque(maxlen=_R2_WINDOW)

    def params(self) -> dict[str, Any]:
        return {
            "weight": self.weight,
            "decoder": self.kind,
            "width": self.width,
            "steps": self.steps,
            "lr": self.lr,
        }

    def setup(self, ctx: TrainContext) -> None:
        self._seed = ctx.seed
        self._device = ctx.device
        self.decoder, self._optim, self._shapes = None, None, None
        self._r2.clear()

    def _build(self, x_shape: tuple[int, ...], z_shape: tuple[int, ...]) -> None:
        """The decoder for these shapes, initialised from this defense's own seed."""
        kind = self.kind
        if kind == "auto":
            kind = "conv" if len(z_shape) == 3 and len(x_shape) == 3 else "mlp"
        if kind == "conv" and not (len(z_shape) == 3 and len(x_shape) == 3):
            raise ConfigError(
                f"adversarial decoder=conv needs a spatial cut (C, h, w) of images, got cut "
                f"{z_shape} for inputs {x_shape}; use decoder=mlp"
            )
        width = self.width or _WIDTH[kind]
        with seeded(self._seed, "defense.decoder", self.purpose, self.party_index):
            self.decoder = build_decoder(kind, x_shape, z_shape, width).to(self._device)
        self._optim = torch.optim.Adam(self.decoder.parameters(), lr=self.lr)
        self._shapes = (tuple(x_shape), tuple(z_shape))

    def penalty(self, cut: str, x: Tensor, z: Tensor) -> Tensor:
        """``steps`` decoder updates on the client's own ``(x, z)``, then the client's term
        ``weight * max(0, R^2)`` of the updated decoder (its weights held fixed)."""
        if self.decoder is None:
            self._build(tuple(x.shape[1:]), tuple(z.shape[1:]))
        target = x.detach().to(z.dtype)
        seen = z.detach()
        for _ in range(self.steps):
            loss = (self.decoder(seen) - target).pow(2).mean()
            self._optim.zero_grad(set_to_none=True)
            loss.backward()
            self._optim.step()
        params = list(self.decoder.parameters())
        for p in params:  # the client's term moves the client's segment, not the decoder
            p.requires_grad_(False)
        try:
            r2 = r_squared(self.decoder(z), target)
        finally:
            for p in params:
                p.requires_grad_(True)
        self._r2.append(float(r2.detach()))
        return self.weight * r2.clamp_min(0)

    def metrics(self) -> dict[str, Any]:
        out = {f"adversarial_{k}": v for k, v in self.params().items() if v is not None}
        out["adversarial_decoder_r2"] = sum(self._r2) / len(self._r2) if self._r2 else None
        return out

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict() | {"r2": list(self._r2), "shapes": None}
        if self.decoder is not None:
            state |= {"shapes": [list(s) for s in self._shapes]}
            state |= {"decoder": self.decoder.state_dict(), "optim": self._optim.state_dict()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._r2 = deque(state["r2"], maxlen=_R2_WINDOW)
        if state["shapes"] is not None:
            x_shape, z_shape = (tuple(s) for s in state["shapes"])
            self._build(x_shape, z_shape)
            self.decoder.load_state_dict(state["decoder"])
            self._optim.load_state_dict(state["optim"])
