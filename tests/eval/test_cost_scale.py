"""SplitFed in ``nopeek cost --measure``: its wire bytes are the formula's, at K = 3.

Every SplitFed epoch moves the cut both ways for every sample (``2pq`` values) and each
client's segment to the fed server and the average back (``2 eta N K``): the wire log of a real
run must hold exactly that, as it must for FedAvg; the FLOPs of the clients are split
learning's (``F_c p``).
"""

from __future__ import annotations

import pytest

from nopeek.errors import ConfigError
from nopeek.eval.cost import BYTES_PER_VALUE, splitfed_values
from nopeek.eval.cost_measure import Knobs, format_measured, measure


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
    got = splitfed_values(p=100, q=8, clients=5, shared=40, local_epochs=3)
    assert got == 2 * 100 * 8 * 3 + 2 * 40 * 5


@pytest.fixture(scope="module")
def two_passes() -> dict:
    knobs = {m: Knobs(1e-3, 2, 2) for m in ("splitfed-v1", "splitfed-v2", "fedavg")}
    return measure(
        clients=3, target=1.0, max_epochs=2, max_train=60, splitfed=("v1", "v2"), knobs=knobs
    )


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_splitfed_local_epochs_bytes_are_the_formulas_at_k3(
    measured: dict, two_passes: dict, version: str
) -> None:
    """E = 2: the cut crosses twice per sample per round (2pq * E), the weights once per
    round (2 eta N K); the clients' FLOPs are twice those of E = 1."""
    s, m = two_passes["setting"], two_passes[f"splitfed-{version}"]
    per_round = 2 * s["p"] * s["q"] * 2 + 2 * s["client_params"] * 3  # written out
    assert (m.epochs, m.local_epochs) == (2, 2)
    assert m.bytes_total == 2 * per_round * BYTES_PER_VALUE == m.bytes_predicted
    assert m.flops_clients == pytest.approx(2 * measured[f"splitfed-{version}"].flops_clients)
    assert m.flops_clients == pytest.approx(m.flops_predicted, rel=1e-12)


def test_fedavg_local_epochs_same_bytes_twice_the_flops(measured: dict, two_passes: dict) -> None:
    one, two = measured["fedavg"], two_passes["fedavg"]
    assert two.bytes_total == one.bytes_total == two.bytes_predicted  # 2NK a round, whatever E
    assert two.flops_clients == pytest.approx(2 * one.flops_clients)
    assert two.flops_clients == pytest.approx(two.flops_predicted, rel=1e-12)


def test_bad_knobs_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="relay\\) has no local epochs"):
        measure(clients=2, max_epochs=1, max_train=40, knobs={"split": Knobs(1e-3, 2, 1)})
    with pytest.raises(ConfigError, match="unknown methods \\['fedsgd'\\]"):
        measure(clients=2, max_epochs=1, max_train=40, knobs={"fedsgd": Knobs(1e-3, 1, 1)})
    with pytest.raises(ConfigError, match="knob 'epochs' in 'epochs=3' is none of lr, E, max"):
        Knobs.parse("epochs=3", Knobs(1e-3, 1, 1))
    for bad in ("E=0", "lr=inf", "lr=nan", "lr=-1"):
        with pytest.raises(ConfigError, match="knobs need a finite lr > 0, E >= 1 and max >= 1"):
            Knobs.parse(bad, Knobs(1e-3, 1, 1))


@pytest.mark.parametrize("flag", [["--knobs", "fedavg:E=2"], ["--splitfed", "v1"],
                                  ["--max-train", "60"]])  # fmt: skip
def test_measure_flags_without_measure_are_one_line(flag, capsys) -> None:
    from nopeek.cli.main import main

    assert main(["cost", "--dataset", "digits", "--cut", "conv2", *flag]) == 2
    err = capsys.readouterr().err
    assert f"{flag[0]} applies to --measure only; drop it" in err and err.count("\n") == 1
