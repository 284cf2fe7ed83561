"""A user's own model for the ``module:`` tests: ``make(input_shape, n_classes) -> nn.Module``.

Not an ``nn.Sequential``: a stem, a residual block (its skip crosses any cut inside it), a pool
and a head, as a user would write them.
"""

import torch
from torch import nn


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


class Tiny(nn.Module):
    def __init__(self, channels: int, n_classes: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(channels, 8, 3, padding=1)
        self.block = Residual(8)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(8 * 2 * 2, n_classes)

    def forward(self, x):
        x = self.block(torch.relu(self.stem(x)))
        return self.head(torch.flatten(self.pool(x), 1))


def make(input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    return Tiny(input_shape[0], n_classes)


def not_a_model(input_shape, n_classes):
    return "a string"


def broken(input_shape, n_classes):
    layers = {"stem": nn.Conv2d(input_shape[0], 8, 3)}
    return layers["head"]  # a bug in the user's factory
