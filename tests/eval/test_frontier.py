"""The Pareto frontier marks exactly the non-dominated points (higher accuracy, lower leakage)."""

import numpy as np
import pytest

from nopeek.errors import ConfigError
from nopeek.eval.frontier import frontier_order, pareto_mask


def _brute_force(acc, leak):
    """Independent reference: i is dominated if some j is >= on accuracy, <= on every leakage,
    and strictly better on one."""
    leak = np.asarray(leak, dtype=float).reshape(len(acc), -1)
    out = []
    for i in range(len(acc)):
        dominated = False
        for j in range(len(acc)):
            no_worse = acc[j] >= acc[i] and all(leak[j] <= leak[i])
            strictly = acc[j] > acc[i] or any(leak[j] < leak[i])
            dominated |= no_worse and strictly
        out.append(not dominated)
    return out


def test_crafted_frontier():
    # settings: undefended, three NoPeek alphas, one dominated noise setting, one duplicate
    acc = [0.97, 0.95, 0.90, 0.80, 0.85, 0.90]
    ssim = [0.80, 0.50, 0.30, 0.10, 0.40, 0.30]
    assert pareto_mask(acc, ssim).tolist() == [True, True, True, True, False, True]
    # sorted by leakage for drawing: 0.10, 0.30, 0.30, 0.50, 0.80
    assert frontier_order(acc, ssim).tolist() == [3, 2, 5, 1, 0]


def test_equal_accuracy_lower_leakage_dominates():
    assert pareto_mask([0.9, 0.9], [0.2, 0.3]).tolist() == [True, False]
    assert pareto_mask([0.9, 0.8], [0.2, 0.2]).tolist() == [True, False]


def test_several_leakage_metrics():
    acc = [0.9, 0.9, 0.9]
    leak = [[0.2, 0.7], [0.3, 0.5], [0.3, 0.7]]  # third is dominated by both others
    assert pareto_mask(acc, leak).tolist() == [True, True, False]


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_on_random_points(seed):
    rng = np.random.default_rng(seed)
    acc = rng.choice([0.7, 0.8, 0.9, 1.0], size=30)  # ties on purpose
    leak = rng.choice([0.1, 0.2, 0.3], size=(30, 2))
    assert pareto_mask(acc, leak).tolist() == _brute_force(acc, leak)


def test_nan_is_refused():
    with pytest.raises(ConfigError, match="missing"):
        pareto_mask([0.9, float("nan")], [0.1, 0.2])
