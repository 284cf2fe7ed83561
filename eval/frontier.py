"""Pareto frontiers of the privacy-utility trade-off: higher utility and lower leakage win.

A setting is *Pareto-optimal* when no other setting is at least as good on every objective and
strictly better on one: no other setting has accuracy >= its accuracy and leakage <= its
leakage with one of the two strict. Identical points do not dominate each other, so both stay.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nopeek.errors import ConfigError


def pareto_mask(utility: Sequence[float], leakage: Sequence[float] | np.ndarray) -> np.ndarray:
    """Boolean mask (N,) of the non-dominated points.

    ``utility``: (N,), higher is better (accuracy). ``leakage``: (N,) or (N, K) for K leakage
    metrics, each lower-is-better. NaN is refused: a missing metric has no place on a frontier.

    >>> pareto_mask([0.9, 0.8, 0.7, 0.85], [0.5, 0.2, 0.3, 0.5]).tolist()
    [True, True, False, False]
    """
    u = np.asarray(utility, dtype=float).reshape(-1, 1)
    leak = np.asarray(leakage, dtype=float)
    leak = leak.reshape(len(u), -1)
    if np.isnan(u).any() or np.isnan(leak).any():
        raise ConfigError("a frontier point has a missing (NaN) metric; drop it before plotting")
    # cost[i] = objectives to minimise for point i: (-utility, leakage...)
    cost = np.concatenate([-u, leak], axis=1)
    no_worse = (cost[:, None, :] <= cost[None, :, :]).all(axis=2)  # [j, i]: j <= i everywhere
    better = (cost[:, None, :] < cost[None, :, :]).any(axis=2)  # [j, i]: j < i somewhere
    dominated = (no_worse & better).any(axis=0)
    return ~dominated


def frontier_order(utility: Sequence[float], leakage: Sequence[float]) -> np.ndarray:
    """Indices of the Pareto-optimal points sorted by leakage (to draw the frontier as a line).

    >>> frontier_order([0.9, 0.8, 0.7], [0.5, 0.2, 0.3]).tolist()
    [1, 0]
    """
    mask = pareto_mask(utility, leakage)
    idx = np.flatnonzero(mask)
    return idx[np.argsort(np.asarray(leakage, dtype=float)[idx], kind="stable")]
