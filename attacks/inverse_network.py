"""Inverse-network attack (He, Zhang & Lee 2019; the attack the NoPeek paper evaluates against).

Threat model: a black-box attacker who can *query* the client segment (send its own inputs and
see the activations, e.g. a server that also acts as a client, or a client-side API) and holds
auxiliary data from the same distribution, but not the weights. It queries the client with its
auxiliary inputs, trains a decoder ``activation -> input`` on these pairs, and applies the
decoder to the victims' observed activations.

It knows the defenses' mechanism (Kerckhoffs), not their secrets: its queries are answered as
the deployed client sends (through the run's forward defenses, with fresh noise), and where the
noise is fresh per message it may query every aux sample ``repeats`` times and train on all the
noisy answers (a denoising decoder: it learns the input's expectation given a noisy message, as
the victims' single noisy messages need; averaging the repeats instead would train it on cleaner
inputs than the victims'). Against the adversarial defense its ``--strongest`` family only
builds decoders wider than the client's own simulated attacker (:meth:`InverseNetwork.family`).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from nopeek.attacks.base import (
    RECONSTRUCTION,
    Attack,
    AttackInputs,
    Known,
    Reconstruction,
    ThreatModel,
)
from nopeek.attacks.registry import register
from nopeek.attacks.whitebox import count_option, is_image, positive_option, steps_of
from nopeek.seeding import seeded, stream_seed

log = logging.getLogger(__name__)


class _Upsample(nn.Module):
    """Resize (N, C, h, w) feature maps to exactly ``size`` (H, W) (bilinear)."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def forward(self, z: Tensor) -> Tensor:
        if tuple(z.shape[-2:]) == self.size:
            return z
        return F.interpolate(z, size=self.size, mode="bilinear", align_corners=False)


class _ToImage(nn.Module):
    """Squash decoder outputs into the valid pixel range [0, data_range] (images only)."""

    def __init__(self, data_range: float) -> None:
        super().__init__()
        self.data_range = data_range

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x) * self.data_range


def conv_decoder(
    cut_shape: tuple[int, ...], input_shape: tuple[int, ...], width: int, depth: int = 1
) -> nn.Module:
    """Decoder for spatial activations (C, h, w) -> images (c, H, W).

    A 3x3 convolution, then one stride-2 transposed convolution per doubling needed to reach
    the input's size (none if the cut keeps the size), a resize to exactly (H, W), ``depth``
    3x3 convolutions of ``width`` channels and one down to the input's channels. Outputs are
    logits (see :class:`_ToImage`).
    """
    c_in, h, _ = cut_shape
    c_out, H, W = input_shape
    doublings = max(0, math.ceil(math.log2(H / h))) if h < H else 0
    layers: list[nn.Module] = [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU()]
    for _ in range(doublings):
        layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU()]
    layers.append(_Upsample((H, W)))
    for _ in range(depth):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
    layers.append(nn.Conv2d(width, c_out, 3, padding=1))
    return nn.Sequential(*layers)


def mlp_decoder(
    cut_shape: tuple[int, ...], input_shape: tuple[int, ...], width: int, depth: int = 1
) -> nn.Module:
    """Decoder for flat activations (D,) -> inputs of any shape: an MLP with ``depth + 1``
    hidden layers of ``width`` units."""
    d_in, d_out = math.prod(cut_shape), math.prod(input_shape)
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(d_in, width), nn.ReLU()]
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    layers += [nn.Linear(width, d_out), nn.Unflatten(1, input_shape)]
    return nn.Sequential(*layers)


def decoder_kind(cut_shape: tuple[int, ...], input_shape: tuple[int, ...]) -> str:
    """``conv`` for spatial activations (C, h, w) of images, else ``mlp``.

    >>> decoder_kind((32, 4, 4), (1, 8, 8)), decoder_kind((64,), (1, 8, 8))
    ('conv', 'mlp')
    """
    return "conv" if len(cut_shape) == 3 and is_image(input_shape) else "mlp"


def build_decoder(
    cut_shape: tuple[int, ...],
    input_shape: tuple[int, ...],
    *,
    data_range: float,
    width: int,
    depth: int = 1,
) -> nn.Module:
    """A decoder from activations of ``cut_shape`` to inputs of ``input_shape``.

    >>> d = build_decoder((32, 4, 4), (1, 8, 8), data_range=1.0, width=16)
    >>> tuple(d(torch.zeros(2, 32, 4, 4)).shape)
    (2, 1, 8, 8)
    """
    spatial = decoder_kind(cut_shape, input_shape) == "conv"
    body = (conv_decoder if spatial else mlp_decoder)(cut_shape, input_shape, width, depth)
    return nn.Sequential(body, _ToImage(data_range)) if is_image(input_shape) else body


def fit_decoder(
    decoder: nn.Module, z: Tensor, x: Tensor, *, steps: int, lr: float, batch_size: int, seed: int
) -> float:
    """Train ``decoder`` on pairs (z (A, *cut_shape), x (A, *input_shape)) with MSE and Adam.

    ``steps`` minibatch iterations; minibatches drawn with a generator seeded by ``seed``.
    Returns the last minibatch loss.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    decoder.train()
    loss = torch.zeros(())
    for _ in tqdm(range(steps), desc="inverse-network", leave=False, disable=None):
        idx = torch.randint(len(z), (min(batch_size, len(z)),), generator=gen)
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(decoder(z[idx]), x[idx])
        loss.backward()
        opt.step()
    decoder.eval()
    return float(loss.detach())


@register
class InverseNetwork(Attack):
    """Learn ``activation -> input`` from queries on auxiliary data; decode the victims.

    Options (``AttackInputs.options`` or keywords): ``lr`` (Adam, default 1e-3), ``width``
    (decoder channels / hidden units, 32), ``depth`` (hidden layers of ``width`` after the
    first, 1), ``batch_size`` (64), ``repeats`` (answers per aux sample, 1: with fresh noise
    per message, each repeat is another noisy answer to train on). ``steps`` (minibatch
    iterations) defaults to 1000. Raise ``width`` and ``steps`` for larger images.

    Knowledge assumed: query access to the deployed client (answers through its defenses), the
    attacker's own aux data, the victims' messages, and the defenses' mechanism (module
    docstring); never the client's weights or the defender's decoder.
    """

    name = "inverse-network"
    kind = RECONSTRUCTION
    threat_model = ThreatModel(activations=True, query_client=True, aux_data=True)
    option_keys = ("lr", "width", "depth", "batch_size", "repeats")
    search_space = {
        "width": (32, 64),
        "depth": (1, 2),
        "lr": (1e-3, 3e-3),
        "steps": (1000, 2000),
        "aux_size": (None,),  # the whole aux split: more data never weakens a decoder
    }
    default_samples = None  # all observed victims: decoding is cheap
    default_steps = 1000

    def __init__(self, *, lr: float | None = None, width: int | None = None) -> None:
        self.lr, self.width = lr, width

    @classmethod
    def family(cls, known: Known) -> dict[str, tuple]:
        """:attr:`search_space`, adapted to the defense: with fresh noise per message, also
        ``repeats`` (1, 4) noisy answers per aux sample; against a client trained to fool its
        own simulated decoder (adversarial defense), only widths above that decoder's."""
        space = dict(cls.search_space)
        if known.fresh_noise and "repeats" in cls.option_keys:
            space["repeats"] = (1, 4)
        floor = known.defender_widths.get(decoder_kind(known.cut_shape, known.input_shape))
        if floor is not None:
            space["width"] = wider_than(floor, space["width"])
        return space

    def run(self, inputs: AttackInputs) -> Reconstruction:
        seen = inputs.need("activations")
        repeats = self.repeats(inputs)
        z_aux, x_aux = self.pairs(inputs, repeats)
        lr = self.lr if self.lr is not None else positive_option(inputs, "lr", 1e-3)
        width = int(self.width or inputs.options.get("width", 32))
        depth = count_option(inputs, "depth", 1)
        batch_size = int(inputs.options.get("batch_size", 64))
        with seeded(inputs.seed, "attack.inverse-network.init"):
            decoder = build_decoder(
                tuple(z_aux.shape[1:]),
                inputs.input_shape,
                data_range=inputs.data_range,
                width=width,
                depth=depth,
            )
        last = fit_decoder(
            decoder,
            z_aux.float(),
            x_aux.float(),
            steps=steps_of(inputs, self.default_steps),
            lr=lr,
            batch_size=batch_size,
            seed=stream_seed(inputs.seed, "attack.inverse-network.batches"),
        )
        log.info("%s: last training loss %.5f on %d pairs", self.name, last, len(x_aux))
        with torch.no_grad():
            x_hat = decoder(seen.tensor.float())
        extra = {"decoder_train_mse": last, "aux_size": len(x_aux) // repeats, "width": width}
        extra |= {"depth": depth, "lr": lr, "repeats": repeats}
        return Reconstruction(ids=seen.ids.clone(), x_hat=x_hat, extra=extra)

    def repeats(self, inputs: AttackInputs) -> int:
        """How many times every aux input is asked (option ``repeats``, default 1)."""
        return count_option(inputs, "repeats", 1)

    def pairs(self, inputs: AttackInputs, repeats: int = 1) -> tuple[Tensor, Tensor]:
        """The decoder's training pairs: the client's answers to the aux inputs, and those;
        every aux input asked ``repeats`` times (with fresh noise, fresh answers each)."""
        aux, query = inputs.need("aux"), inputs.need("query_client")
        z = torch.cat([query(aux.x) for _ in range(repeats)])
        return z, aux.x.repeat(repeats, *([1] * (aux.x.dim() - 1)))


def wider_than(floor: int, widths: tuple[int, ...]) -> tuple[int, ...]:
    """``widths`` above ``floor``, with ``2 * floor`` first: the smallest decoder a search may
    build against a client trained to fool a decoder of width ``floor``.

    >>> wider_than(32, (32, 64, 128)), wider_than(256, (32, 64, 128))
    ((64, 128), (512,))
    """
    return tuple(sorted({2 * floor, *(w for w in widths if w > floor)}))
