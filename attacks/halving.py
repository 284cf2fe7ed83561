"""Successive halving over a seeded sample of a grid: the pure parts of the attack search.

:func:`sample_configs` draws configurations from a grid of knobs, :func:`rungs` and
:func:`successive_halving` schedule them by a score (Jamieson & Talwalkar, "Non-stochastic best
arm identification and hyperparameter optimization", AISTATS 2016), :func:`t_interval` gives the
survivor's confidence interval over seeds. Nothing here knows about attacks
(:mod:`nopeek.attacks.search` runs them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nopeek.errors import ConfigError
from nopeek.seeding import numpy_rng

ETA = 2
"""Each rung keeps the best ``1 / ETA`` of its configurations."""


@dataclass(frozen=True)
class Rung:
    """One rung: ``size`` configurations run at ``fraction`` of their steps."""

    fraction: float
    size: int


def rungs(n: int, eta: int = ETA) -> list[Rung]:
    """The rungs of successive halving for ``n`` configurations: sizes ``n``, ``n // eta``, ...
    down to 1, the last at full steps and each earlier one at ``1 / eta`` of the next.

    >>> [(r.fraction, r.size) for r in rungs(4)]
    [(0.25, 4), (0.5, 2), (1.0, 1)]
    >>> [(r.fraction, r.size) for r in rungs(1)]
    [(1.0, 1)]
    """
    if n < 1 or eta < 2:
        raise ConfigError(f"successive halving needs n >= 1 and eta >= 2, got {n}, {eta}")
    sizes = [n]
    while sizes[-1] > 1:
        sizes.append(max(1, sizes[-1] // eta))
    last = len(sizes) - 1
    return [Rung(float(eta) ** -(last - r), size) for r, size in enumerate(sizes)]


@dataclass(frozen=True)
class Trial:
    """One evaluation: configuration ``config`` (its index) at ``rung``, ``fraction`` of its
    steps, with attack seed ``seed``, scoring ``score``."""

    config: int
    rung: int
    fraction: float
    seed: int
    score: float


def successive_halving(
    n: int,
    objective: Callable[[int, float, int], float],
    *,
    eta: int = ETA,
    seeds: Sequence[int] = (0,),
) -> list[Trial]:
    """Successive halving of configurations ``0 .. n - 1`` by ``objective(config, fraction,
    seed)`` (higher is better): every rung but the last runs at ``seeds[0]`` and keeps the
    best ``rungs(n, eta)[r + 1].size`` (ties: the lower index); the last rung runs its one
    survivor over every seed. Returns every trial in order; the last ones are the survivor's.

    >>> trials = successive_halving(4, lambda c, f, s: c * f, seeds=(0, 1))
    >>> [(t.config, t.fraction, t.seed) for t in trials]  # doctest: +NORMALIZE_WHITESPACE
    [(0, 0.25, 0), (1, 0.25, 0), (2, 0.25, 0), (3, 0.25, 0), (3, 0.5, 0), (2, 0.5, 0),
     (3, 1.0, 0), (3, 1.0, 1)]
    """
    if not seeds:
        raise ConfigError("successive halving needs at least one seed")
    schedule = rungs(n, eta)
    alive, trials = list(range(n)), []
    for r, rung in enumerate(schedule):
        last = r == len(schedule) - 1
        scores = {}
        for config in alive:
            for seed in seeds if last else seeds[:1]:
                score = float(objective(config, rung.fraction, seed))
                trials.append(Trial(config, r, rung.fraction, seed, score))
                scores.setdefault(config, score)
        if not last:
            ranked = sorted(alive, key=lambda c: (-scores[c], c))
            alive = ranked[: schedule[r + 1].size]
    return trials


def sample_configs(space: Mapping[str, Sequence[Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` distinct configurations of the grid ``space`` (knob -> candidates): the first
    candidates first, then ones drawn uniformly without replacement with a generator seeded by
    ``seed`` (fewer when the grid is smaller).

    >>> sample_configs({"w": (32, 64), "tv": (0.0,)}, 5, 0)
    [{'w': 32, 'tv': 0.0}, {'w': 64, 'tv': 0.0}]
    """
    knobs = list(space)
    sizes = [len(space[k]) for k in knobs]
    if any(s == 0 for s in sizes):
        raise ConfigError(f"knob {knobs[sizes.index(0)]!r} of the search space has no candidate")
    total = math.prod(sizes)
    picks = [0]
    if n > 1 and total > 1:
        rng = numpy_rng(seed, "attack.search.sample")
        drawn = rng.choice(total - 1, size=min(n, total) - 1, replace=False) + 1
        picks += [int(i) for i in drawn]
    configs = []
    for flat in picks:
        config = {}
        for knob, size in zip(reversed(knobs), reversed(sizes)):
            flat, digit = divmod(flat, size)
            config[knob] = space[knob][digit]
        configs.append({k: config[k] for k in knobs})
    return configs


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """The t-based confidence interval of the mean of ``values`` (None for fewer than two).

    >>> [round(v, 3) for v in t_interval([0.4, 0.5, 0.6])]
    [0.252, 0.748]
    """
    if len(values) < 2:
        return None
    from scipy import stats

    n, mean = len(values), sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half
