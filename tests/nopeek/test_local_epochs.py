"""SplitFed's local epochs (``--local-epochs E``): E passes over each shard per round.

The reference: with one client, averaging is the identity, so a SplitFed round of E local
passes is E epochs of vanilla split learning on the same data (the one shard holds every
sample in order, pass e takes epoch e's batch order): the same test loss, bit for bit, and E
times one epoch's client FLOPs.
"""

from __future__ import annotations

import pytest

from nopeek.config import TrainConfig
from nopeek.errors import ConfigError
from nopeek.training.trainer import train

COMMON = dict(dataset="digits", max_train=120, device="cpu", record_samples=0, dcor_samples=64)


@pytest.fixture(scope="module")
def vanilla() -> dict:
    return train(TrainConfig(topology="vanilla", epochs=2, **COMMON), quiet=True).metrics


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_one_client_round_of_two_passes_is_two_vanilla_epochs(vanilla: dict, version: str) -> None:
    cfg = TrainConfig(
        topology="splitfed", splitfed=version, clients=1, local_epochs=2, epochs=1, **COMMON
    )
    got = train(cfg, quiet=True).metrics
    assert got["test_loss"] == vanilla["test_loss"]
    assert got["test_accuracy"] == vanilla["test_accuracy"]
    assert got["flops_client0"] == 2 * vanilla["flops_client"]  # vanilla's: one epoch


def test_local_epochs_is_splitfed_only() -> None:
    cfg = TrainConfig(topology="many-clients", clients=3, local_epochs=2, **COMMON)
    with pytest.raises(ConfigError, match="--local-epochs 2 applies to --topology splitfed only"):
        cfg.validate()


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_bad_local_epochs_refused_in_one_line(bad: object) -> None:
    cfg = TrainConfig(topology="splitfed", clients=2, local_epochs=bad, **COMMON)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^--local-epochs must be an integer >= 1"):
        cfg.validate()
