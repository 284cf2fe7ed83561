"""Printed numbers: always after their metric's name, one rounding rule; DP-SGD's epsilon only
where its guarantee holds."""

import pytest

from nopeek.cli._fmt import metric, number
from nopeek.cli.train import _result_line


@pytest.mark.parametrize(
    "value, text",
    [(0.87312, "0.873"), (1.0, "1.000"), (0.0, "0.000"), (23.45678, "23.457"),
     (6.5e-15, "6.5e-15"), (-0.0004, "-0.0004"), (7, "7"), (None, "n/a")],
)  # fmt: skip
def test_one_rounding_rule(value, text):
    assert number(value) == text and metric("leak", value) == f"leak {text}"


def test_epsilon_is_printed_only_where_the_guarantee_holds():
    m = {"test_accuracy": 0.9, "epsilon_dpsgd": 3.21, "dpsgd_guarantee_holds": True}
    assert _result_line(m) == "test_accuracy 0.900  epsilon_dpsgd 3.210"
    void = m | {"dpsgd_guarantee_holds": False, "dpsgd_guarantee_voided_by": "nopeek alpha=1"}
    line = _result_line(void)
    assert "3.210" not in line and "no DP guarantee, nopeek alpha=1 couples" in line
    assert _result_line({"test_accuracy": 0.5}) == "test_accuracy 0.500"
