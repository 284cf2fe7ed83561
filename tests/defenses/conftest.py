"""Shared helpers for the defense tests: a bare training context for unit tests of hooks, and
a small digits run trained under a defense."""

import pytest

from nopeek import TrainConfig
from nopeek.hooks import TrainContext
from nopeek.training.trainer import train


@pytest.fixture
def bare_ctx():
    """A TrainContext without parties (enough for cut-noise and label-gradient defenses)."""

    def make(**overrides) -> TrainContext:
        base = dict(
            n_train=1000,
            batch_size=50,
            epochs=5,
            seed=0,
            delta=1e-5,
            parties={},
            data_party="client",
            label_party="server",
            device="cpu",
        )
        return TrainContext(**(base | overrides))

    return make


@pytest.fixture
def defended_run(tmp_path):
    """``defended_run(spec)``: the metrics of 6 epochs of digits (300 training samples) trained
    under the defense ``spec``."""

    def run(spec: str) -> dict:
        cfg = TrainConfig(dataset="digits", epochs=6, max_train=300, record_samples=16,
                          dcor_samples=50, defenses=[spec])  # fmt: skip
        return train(cfg, tmp_path / "run", quiet=True).metrics

    return run
