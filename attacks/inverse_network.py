"""Inverse-network attack (He, Zhang & Lee 2019; the attack the NoPeek paper evaluates against).

Threat model: a black-box attacker who can *query* the client segment (send its own inputs and
see the activations, e.g. a server that also acts as a client, or a client-side API) and holds
auxiliary data from the same distribution, but not the weights. It queries the client with its
auxiliary inputs, trains a decoder ``activation -> input`` on these pairs, and applies the
decoder to the victims' observed activations.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from nopeek.attacks.base import RECONSTRUCTION, Attack, AttackInputs, Reconstruction, ThreatModel
from nopeek.attacks.registry import ATTACKS
from nopeek.attacks.whitebox import is_image, positive_option, steps_of
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


def conv_decoder(cut_shape: tuple[int, ...], input_shape: tuple[int, ...], width: int) -> nn.Module:
    """Decoder for spatial activations (C, h, w) -> images (c, H, W).

    A 3x3 convolution, then one stride-2 transposed convolution per doubling needed to reach
    the input's size (none if the cut keeps the size), a resize to exactly (H, W), and two 3x3
    convolutions down to the input's channels. Outputs are logits (see :class:`_ToImage`).
    """
    c_in, h, _ = cut_shape
    c_out, H, W = input_shape
    doublings = max(0, math.ceil(math.log2(H / h))) if h < H else 0
    layers: list[nn.Module] = [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU()]
    for _ in range(doublings):
        layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU()]
    layers += [
        _Upsample((H, W)),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, c_out, 3, padding=1),
    ]
    return nn.Sequential(*layers)


def mlp_decoder(cut_shape: tuple[int, ...], input_shape: tuple[int, ...], width: int) -> nn.Module:
    """Decoder for flat activations (D,) -> inputs of any shape: a two-hidden-layer MLP."""
    d_in, d_out = math.prod(cut_shape), math.prod(input_shape)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(d_in, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, d_out),
        nn.Unflatten(1, input_shape),
    )


def build_decoder(
    cut_shape: tuple[int, ...], input_shape: tuple[int, ...], *, data_range: float, width: int
) -> nn.Module:
    """A decoder from activations of ``cut_shape`` to inputs of ``input_shape``.

    >>> d = build_decoder((32, 4, 4), (1, 8, 8), data_range=1.0, width=16)
    >>> tuple(d(torch.zeros(2, 32, 4, 4)).shape)
    (2, 1, 8, 8)
    """
    spatial = len(cut_shape) == 3 and is_image(input_shape)
    body = (conv_decoder if spatial else mlp_decoder)(cut_shape, input_shape, width)
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


@ATTACKS.decorator("inverse-network")
class InverseNetwork(Attack):
    """Learn ``activation -> input`` from queries on auxiliary data; decode the victims.

    Options (``AttackInputs.options`` or keywords): ``lr`` (Adam, default 1e-3), ``width``
    (decoder channels / hidden units, 32), ``batch_size`` (64). ``steps`` (minibatch
    iterations) defaults to 1000. Raise ``width`` and ``steps`` for larger images.
    """

    name = "inverse-network"
    kind = RECONSTRUCTION
    threat_model = ThreatModel(activations=True, query_client=True, aux_data=True)
    option_keys = ("lr", "width", "batch_size")
    default_samples = None  # all observed victims: decoding is cheap
    default_steps = 1000

    def __init__(self, *, lr: float | None = None, width: int | None = None) -> None:
        self.lr, self.width = lr, width

    def run(self, inputs: AttackInputs) -> Reconstruction:
        seen = inputs.need("activations")
        z_aux, x_aux = self.pairs(inputs)
        lr = self.lr if self.lr is not None else positive_option(inputs, "lr", 1e-3)
        width = int(self.width or inputs.options.get("width", 32))
        batch_size = int(inputs.options.get("batch_size", 64))
        with seeded(inputs.seed, "attack.inverse-network.init"):
            decoder = build_decoder(
                tuple(z_aux.shape[1:]),
                inputs.input_shape,
                data_range=inputs.data_range,
                width=width,
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
        log.info("%s: last training loss %.5f on %d aux samples", self.name, last, len(x_aux))
        with torch.no_grad():
            x_hat = decoder(seen.tensor.float())
        return Reconstruction(
            ids=seen.ids.clone(),
            x_hat=x_hat,
            extra={"decoder_train_mse": last, "aux_size": len(x_aux), "width": width},
        )

    def pairs(self, inputs: AttackInputs) -> tuple[Tensor, Tensor]:
        """The decoder's training pairs: the client's answers to the aux inputs, and those."""
        aux = inputs.need("aux")
        return inputs.need("query_client")(aux.x), aux.x
