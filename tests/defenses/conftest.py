"""Shared helpers for the defense tests: a bare training context for unit tests of hooks."""

import pytest

from nopeek.hooks import TrainContext


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
