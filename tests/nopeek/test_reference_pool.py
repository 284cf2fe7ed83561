"""The reference models' channels-last max-pool against torch's own, value and gradient."""

import pytest
import torch
from torch import nn

from nopeek.models._reference import MaxPool2d


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ((64, 32, 8, 8), {"kernel_size": 2}),
        ((5, 3, 9, 7), {"kernel_size": 3, "stride": 2, "padding": 1}),
        ((4, 16, 10, 10), {"kernel_size": 2, "ceil_mode": True}),
        ((3, 8, 8), {"kernel_size": 2}),  # unbatched
    ],
)
def test_same_values_and_gradients_as_torch(shape, kwargs):
    gen = torch.Generator().manual_seed(0)
    # after a ReLU: many ties at zero, where the two kernels must still route the same way
    x = torch.relu(torch.randn(shape, generator=gen)).requires_grad_()
    ours, theirs = MaxPool2d(**kwargs)(x), nn.MaxPool2d(**kwargs)(x)
    assert torch.equal(ours, theirs) and ours.is_contiguous()
    weight = torch.randn(ours.shape, generator=gen)
    (g_ours,) = torch.autograd.grad((ours * weight).sum(), x)
    (g_theirs,) = torch.autograd.grad((theirs * weight).sum(), x)
    assert torch.equal(g_ours, g_theirs)
