"""The reference models: a digits CNN, a tabular MLP, LeNet-5, a CIFAR ResNet-18 and a small
CNN for images of any size (the default for the user's own images of other shapes).

Each is an ``nn.Sequential`` whose named blocks are the places it can be cut. No block uses
randomness at run time (no dropout), so a seed fixes a run exactly.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nopeek.errors import ConfigError
from nopeek.models._registry import MODELS, ModelSpec


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` computed in channels-last memory: the same values and gradients (a max
    picks the same element either way), in 0.6 ms instead of 0.9 ms forward and backward for a
    digits batch (64, 32, 8, 8) on one CPU thread, where torch's NCHW kernel is the slower one
    for many channels on small maps. The output is contiguous, as the cut's messages need.

    >>> x = torch.randn(2, 32, 8, 8)
    >>> torch.equal(MaxPool2d(2)(x), nn.MaxPool2d(2)(x))
    True
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:  # (C, H, W): nothing to gain
            out: Tensor = super().forward(x)
            return out
        y = F.max_pool2d(
            x.contiguous(memory_format=torch.channels_last),
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
        )
        return y.contiguous()


def digits_cnn(input_shape: tuple[int, ...], n_classes: int) -> nn.Sequential:
    """A small CNN for 1x8x8 digits: conv1 (16x8x8), conv2 (32x4x4), fc1 (64), fc2 (classes)."""
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU()),
            conv2=nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), MaxPool2d(2)),
            fc1=nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU()),
            fc2=nn.Linear(64, n_classes),
        )
    )


def tabular_mlp(input_shape: tuple[int, ...], n_classes: int) -> nn.Sequential:
    """An MLP for flat features: fc1 (64), fc2 (32), out (classes)."""
    d = math.prod(input_shape)
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Sequential(nn.Flatten(), nn.Linear(d, 64), nn.ReLU()),
            fc2=nn.Sequential(nn.Linear(64, 32), nn.ReLU()),
            out=nn.Linear(32, n_classes),
        )
    )


def small_cnn(input_shape: tuple[int, ...], n_classes: int) -> nn.Sequential:
    """A CNN for CxHxW images of any size (H, W >= 2): conv1 (16xHxW), conv2 (32x(H/2)x(W/2)),
    fc1 (64, after adaptive average pooling to 32x4x4), fc2 (classes)."""
    if len(input_shape) != 3 or min(input_shape[1:]) < 2:
        raise ConfigError(
            f"model 'cnn' takes (C, H, W) images of at least 2x2 pixels, the data have "
            f"{tuple(input_shape)}; use --model mlp for flat features"
        )
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Sequential(nn.Conv2d(input_shape[0], 16, 3, padding=1), nn.ReLU()),
            conv2=nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), MaxPool2d(2)),
            fc1=nn.Sequential(
                nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU()
            ),
            fc2=nn.Linear(64, n_classes),
        )
    )


def lenet(input_shape: tuple[int, ...], n_classes: int) -> nn.Sequential:
    """LeNet-5 style CNN for 1x28x28 (MNIST, Fashion-MNIST).

    conv1 (6x14x14), conv2 (16x5x5), fc1 (120), fc2 (84), out (classes).
    """
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)),
            conv2=nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2)),
            fc1=nn.Sequential(nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU()),
            fc2=nn.Sequential(nn.Linear(120, 84), nn.ReLU()),
            out=nn.Linear(84, n_classes),
        )
    )


def cifar_resnet18(input_shape: tuple[int, ...], n_classes: int) -> nn.Sequential:
    """torchvision's ResNet-18 adapted to 32x32 inputs, cut after the stem and each stage.

    The usual CIFAR adaptation: a 3x3 stride-1 stem convolution and no max-pool, so the stages
    see 32x32, 16x16, 8x8 and 4x4 feature maps. Cuts: stem (64x32x32), layer1 (64x32x32),
    layer2 (128x16x16), layer3 (256x8x8), layer4 (512x4x4); head = pool + linear.
    """
    from torchvision.models import resnet18  # torchvision on use: it costs a second to import

    net = resnet18(num_classes=n_classes)
    stem = nn.Sequential(
        nn.Conv2d(input_shape[0], 64, 3, stride=1, padding=1, bias=False), net.bn1, net.relu
    )
    head = nn.Sequential(net.avgpool, nn.Flatten(), net.fc)
    return nn.Sequential(
        OrderedDict(
            stem=stem,
            layer1=net.layer1,
            layer2=net.layer2,
            layer3=net.layer3,
            layer4=net.layer4,
            head=head,
        )
    )


MODELS.register(
    "digits-cnn",
    ModelSpec(
        "digits-cnn",
        "small CNN for 1x8x8 digits",
        digits_cnn,
        "image",
        "conv2",
        ("conv1", "conv2", "fc1"),
        ((1, 8, 8),),
    ),
)
MODELS.register(
    "mlp",
    ModelSpec("mlp", "MLP for tabular features", tabular_mlp, "tabular", "fc1", ("fc1", "fc2")),
)
MODELS.register(
    "lenet",
    ModelSpec(
        "lenet",
        "LeNet-5 style CNN for 1x28x28 (MNIST, Fashion-MNIST)",
        lenet,
        "image",
        "conv2",
        ("conv1", "conv2", "fc1", "fc2"),
        ((1, 28, 28),),
    ),
)
MODELS.register(
    "resnet18",
    ModelSpec(
        "resnet18",
        "torchvision ResNet-18 adapted to 3x32x32 (CIFAR-10)",
        cifar_resnet18,
        "image",
        "layer1",
        ("stem", "layer1", "layer2", "layer3", "layer4"),
        ((3, 32, 32),),
    ),
)
MODELS.register(
    "cnn",
    ModelSpec(
        "cnn",
        "small CNN for images of any size (adaptive pooling)",
        small_cnn,
        "image",
        "conv2",
        ("conv1", "conv2", "fc1"),
    ),
)
