"""A tiny real sweep shared by the eval tests (2 settings x 2 seeds x 2 attacks, ~20 s)."""

import pytest

from nopeek.config import TrainConfig
from nopeek.eval.settings import make_settings
from nopeek.eval.sweep import SweepSpec, run_sweep

ATTACKS = ["inverse-network:steps=20,width=8", "white-box:steps=5,n_samples=8"]


def _tiny_spec(**over) -> SweepSpec:
    """digits, 2 epochs, alpha 0 and 1, seeds 0 and 1, two cheap reconstruction attacks."""
    base = TrainConfig(dataset="digits", epochs=2, dcor_samples=40, record_samples=64).resolved()
    spec = dict(
        base=base,
        settings=make_settings([0.0, 1.0]),
        seeds=[0, 1],
        attacks=list(ATTACKS),
        attack_options={},
    )
    return SweepSpec(**(spec | over))


@pytest.fixture(scope="session")
def sweep_spec():
    """``sweep_spec(**overrides)`` -> the tiny :class:`SweepSpec` (fields replaced)."""
    return _tiny_spec


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory):
    """(sweep directory, rows) of the tiny spec."""
    out = tmp_path_factory.mktemp("sweep")
    rows = run_sweep(_tiny_spec(), out, quiet=True)
    return out, rows
