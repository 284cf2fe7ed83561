"""Shared test set-up: one thread (tiny models; avoids OpenMP spin under load), small runs."""

import pytest
import torch

from nopeek import CutHook, TrainConfig

torch.set_num_threads(1)


@pytest.fixture
def tiny_config():
    """A digits run that trains in a couple of seconds."""

    def make(**overrides) -> TrainConfig:
        base = dict(dataset="digits", epochs=2, batch_size=64, seed=0, dcor_samples=200)
        return TrainConfig(**(base | overrides))

    return make


class _Interrupt(CutHook):
    """Simulates a crash: raises KeyboardInterrupt at the first training step of epoch ``at``
    (``None``: never), for a run of ``steps`` steps per epoch (17 for digits at batch 64)."""

    def __init__(self, at, steps=17):
        self.at, self.steps, self.calls = at, steps, 0

    def forward(self, cut, z, *, training):
        if training and self.at is not None:
            self.calls += 1
            if self.calls > self.at * self.steps:
                raise KeyboardInterrupt
        return z


@pytest.fixture
def interrupt():
    """The crash-simulating hook class, for resume tests."""
    return _Interrupt
