"""SplitFed in ``nopeek cost --measure``: its wire bytes are the formula's, at K = 3.

Every SplitFed epoch moves the cut both ways for every sample (``2pq`` values) and each
client's segment to the fed server and the average back (``2 eta N K``): the wire log of a real
run must hold exactly that, as it must for FedAvg; the FLOPs of the clients are split
learning's (``F_c p``).
"""

from __future__ import annotations

import pytest

from nopeek.eval.cost import BYTES_PER_VALUE, splitfed_values
from nopeek.eval.cost_measure import format_measured, measure


@pytest.fixture(scope="module")
def measured() -> dict:
    return measure(clients=3, target=1.0, max_epochs=2, max_train=60, splitfed=("v1", "v2"))


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_splitfed_bytes_are_the_formulas_at_k3(measured: dict, version: str) -> None:
    s, m = measured["setting"], measured[f"splitfed-{version}"]
    per_epoch = 2 * s["p"] * s["q"] + 2 * s["client_params"] * 3  # written out, not the helper
    assert m.epochs == 2 and m.bytes_total == 2 * per_epoch * BYTES_PER_VALUE
    assert m.bytes_predicted == m.bytes_total and m.bytes_error == 0.0
    assert m.flops_clients == pytest.approx(m.flops_predicted, rel=1e-12)
    assert m.flops_clients == measured["split"].flops_clients  # the same client segment


def test_the_table_lists_every_method(measured: dict) -> None:
    lines = format_measured(measured).splitlines()
    names = ["split learning (relay, peer)", "SplitFed v1", "SplitFed v2", "federated learning"]
    assert [next(i for i, line in enumerate(lines) if line.startswith(n)) for n in names] == [
        2,
        3,
        4,
        5,
    ]


def test_splitfed_formula_by_hand() -> None:
    assert splitfed_values(p=100, q=8, clients=5, shared=40) == 2 * 100 * 8 + 2 * 40 * 5
