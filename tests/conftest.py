"""Shared test set-up: one thread (tiny models; avoids OpenMP spin under load), small runs."""

import pytest
import torch

from nopeek import TrainConfig

torch.set_num_threads(1)


@pytest.fixture
def tiny_config():
    """A digits run that trains in a couple of seconds."""

    def make(**overrides) -> TrainConfig:
        base = dict(dataset="digits", epochs=2, batch_size=64, seed=0, dcor_samples=200)
        return TrainConfig(**(base | overrides))

    return make
