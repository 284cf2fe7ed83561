"""Small networks for feature-space hijacking: pilot encoder, decoder, cut-space critic.

The attacker knows only the input shape (its own auxiliary data) and the cut shape (what it
receives), so the networks are built from those two shapes: convolutional when both are images
``(C, H, W)``, MLPs otherwise (flat cuts, tabular inputs).

The pilot f~ is one layer (a 3x3 convolution averaged down to the cut's resolution, or a linear
map): the simplest feature space the decoder can still invert, and one that any client segment
of at least one layer can reach. On 8x8 digits (cut conv2, 10 epochs, seeds 0-2) it hijacked
the client faster than a three-layer pilot and as well or better. The decoder may be deeper.
The critic has no normalization layers (a WGAN-GP critic must not couple samples).
"""

from __future__ import annotations

import math

from torch import nn

HIDDEN = 256  # MLP width
WIDTH = 64  # conv channels


def _is_image(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3


def pilot_net(
    input_shape: tuple[int, ...], cut_shape: tuple[int, ...], *, nonneg: bool
) -> nn.Module:
    """The pilot encoder f~: ``(N, *input_shape) -> (N, *cut_shape)``.

    ``nonneg`` ends it with a ReLU, so that its feature space is one the client's segment can
    reach when everything the client sends is >= 0 (a ReLU or max-pool at the client's output).

    >>> import torch
    >>> pilot_net((1, 8, 8), (32, 4, 4), nonneg=True)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 32, 4, 4])
    """
    last = nn.ReLU() if nonneg else nn.Identity()
    if _is_image(input_shape) and _is_image(cut_shape):
        return nn.Sequential(
            nn.Conv2d(input_shape[0], cut_shape[0], 3, padding=1),
            nn.AdaptiveAvgPool2d(cut_shape[1:]),
            last,
        )
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), math.prod(cut_shape)),
        nn.Unflatten(1, cut_shape),
        last,
    )


def decoder_net(
    cut_shape: tuple[int, ...], input_shape: tuple[int, ...], *, unit_range: bool
) -> nn.Module:
    """The inverse f~^-1: ``(N, *cut_shape) -> (N, *input_shape)``.

    ``unit_range`` ends it with a sigmoid (images in [0, 1]); tabular outputs are unbounded.

    >>> import torch
    >>> decoder_net((32, 4, 4), (1, 8, 8), unit_range=True)(torch.zeros(2, 32, 4, 4)).shape
    torch.Size([2, 1, 8, 8])
    """
    last = nn.Sigmoid() if unit_range else nn.Identity()
    if _is_image(input_shape) and _is_image(cut_shape):
        return nn.Sequential(
            nn.Conv2d(cut_shape[0], WIDTH, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(WIDTH, WIDTH, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Upsample(size=input_shape[1:], mode="nearest"),
            nn.Conv2d(WIDTH, input_shape[0], 3, padding=1),
            last,
        )
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(cut_shape), HIDDEN),
        nn.LeakyReLU(0.2),
        nn.Linear(HIDDEN, HIDDEN),
        nn.LeakyReLU(0.2),
        nn.Linear(HIDDEN, math.prod(input_shape)),
        nn.Unflatten(1, input_shape),
        last,
    )


def critic_net(cut_shape: tuple[int, ...]) -> nn.Module:
    """The critic D on the cut space: ``(N, *cut_shape) -> (N, 1)`` unbounded scores.

    >>> import torch
    >>> critic_net((16,))(torch.zeros(3, 16)).shape
    torch.Size([3, 1])
    """
    if _is_image(cut_shape):
        c, h, w = cut_shape
        flat = WIDTH * math.ceil(h / 2) * math.ceil(w / 2)
        return nn.Sequential(
            nn.Conv2d(c, WIDTH, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(WIDTH, WIDTH, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(flat, 1),
        )
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(cut_shape), HIDDEN),
        nn.LeakyReLU(0.2),
        nn.Linear(HIDDEN, HIDDEN),
        nn.LeakyReLU(0.2),
        nn.Linear(HIDDEN, 1),
    )
