"""VFLAIR's defense capability scores: DCS per attack, T-DCS per attack type, C-DCS over types.

Source: Zou et al., "VFLAIR: A Research Library and Benchmark for Vertical Federated Learning"
(ICLR 2024), and the library's ``src/metrics/Metrics & Benchmark.md`` with the computation in
``src/metrics/data_process.py`` (``cal_dcs``, ``get_final``). A defense run under one attack is
the point ``df = (AP, MP)``: the attack's performance AP and the main task's performance MP (test
accuracy). Its distance to the ideal defense ``df* = (AP*, MP*)`` gives::

    DCS = 1 / (1 + D(df, df*)),  D = sqrt((1 - beta) * dAP^2 + beta * dMP^2),  beta = 0.5

with ``AP* = 0`` (the attack learns nothing) and ``MP*`` the main-task performance of the same
system *without a defense* (``mp0`` of the vanilla run in ``get_dcs``), and one-sided gaps as in
``cal_dcs``: ``dAP = max(AP - AP*, 0)``, ``dMP = max(MP* - MP, 0)`` (a defense is not rewarded
for beating the undefended accuracy). DCS is 1 for a free, perfect defense, and falls towards 0.

- **T-DCS** of attack type ``j``: the plain mean of the DCS of the ``I_j`` attacks of that type,
  ``T-DCS_j = (1 / I_j) * sum_i DCS_i``.
- **C-DCS**: ``sum_j w_j * T-DCS_j`` with ``sum_j w_j = 1``; VFLAIR's benchmark weights the types
  it tested equally (``average`` over the T-DCS that are not -1, i.e. types without a result are
  left out), which is the default here.

In nopeek, AP is an attack's normalised ``leak`` in [0, 1] (:mod:`nopeek.attacks.leak`; VFLAIR
uses the attack's own success rate, e.g. ``1 - MSE`` for its GRN, clipped at 0), MP the mean
test accuracy over seeds, and AP is averaged over seeds before the score (VFLAIR's ``get_avg``).
Attack types are the attacks' kinds: ``reconstruction`` (VFLAIR's feature reconstruction, FR)
and ``label`` (label inference, LI). nopeek's own trade-off score
(:func:`nopeek.eval.score.tradeoff_score`) is DCS with the strongest attack's leak as AP: it puts
``1 - beta`` on the accuracy gap instead, the same at beta = 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from nopeek.errors import ConfigError

BETA = 0.5
"""VFLAIR's weighting of the main-task gap against the attack's gap (``cal_dcs(beta=0.5)``)."""


def dcs(
    ap: float, mp: float, *, mp_ideal: float, ap_ideal: float = 0.0, beta: float = BETA
) -> float:
    """The defense capability score of one (attack, defense) point (module docstring).

    >>> round(dcs(0.0, 0.9, mp_ideal=0.9), 6)  # no leak, no accuracy lost
    1.0
    >>> round(dcs(0.3, 0.8, mp_ideal=0.9), 6)  # 1 / (1 + sqrt(0.5 * 0.09 + 0.5 * 0.01))
    0.817256
    >>> round(dcs(0.3, 0.95, mp_ideal=0.9), 6) == round(dcs(0.3, 0.9, mp_ideal=0.9), 6)
    True
    """
    if not 0.0 <= beta <= 1.0:
        raise ConfigError(
            f"beta weighs the accuracy gap against the attack's, in [0, 1]; got {beta}"
        )
    d_ap = max(float(ap) - ap_ideal, 0.0)
    d_mp = max(mp_ideal - float(mp), 0.0)
    return 1.0 / (1.0 + math.sqrt((1.0 - beta) * d_ap**2 + beta * d_mp**2))


def t_dcs(scores: Sequence[float]) -> float | None:
    """The mean DCS over the attacks of one type (None without any).

    >>> t_dcs([0.8, 0.6]), t_dcs([])
    (0.7, None)
    """
    return sum(scores) / len(scores) if scores else None


def c_dcs(
    by_type: Mapping[str, float | None], weights: Mapping[str, float] | None = None
) -> float | None:
    """``sum_j w_j T-DCS_j`` over the types with a T-DCS; equal weights by default (VFLAIR's
    benchmark), given weights renormalised over the types present. None without any type.

    >>> round(c_dcs({"label": 0.9, "reconstruction": 0.7, "backdoor": None}), 6)
    0.8
    >>> round(c_dcs({"label": 0.9, "reconstruction": 0.7}, {"label": 3, "reconstruction": 1}), 6)
    0.85
    """
    present = {k: v for k, v in by_type.items() if v is not None}
    if not present:
        return None
    w = (
        {k: 1.0 for k in present}
        if weights is None
        else {k: float(weights.get(k, 0.0)) for k in present}
    )
    total = sum(w.values())
    if total <= 0 or any(v < 0 for v in w.values()):
        raise ConfigError(f"C-DCS weights must be >= 0 with a positive sum over {sorted(present)}")
    return sum(w[k] * present[k] for k in present) / total


@dataclass
class DefenseScores:
    """One setting's scores: ``dcs`` per attack, ``t_dcs`` per attack type, ``c_dcs`` overall."""

    dcs: dict[str, float] = field(default_factory=dict)
    t_dcs: dict[str, float] = field(default_factory=dict)
    c_dcs: float | None = None

    def to_json(self) -> dict[str, object]:
        return {"dcs": dict(self.dcs), "t_dcs": dict(self.t_dcs), "c_dcs": self.c_dcs}


def defense_scores(
    leaks: Mapping[str, float | None],
    kinds: Mapping[str, str],
    accuracy: float,
    reference_accuracy: float,
    *,
    beta: float = BETA,
    weights: Mapping[str, float] | None = None,
) -> DefenseScores:
    """DCS of every attack with a ``leak`` (mean over seeds) at mean ``accuracy``, against the
    undefended ``reference_accuracy``; T-DCS by ``kinds[attack]``; C-DCS over the kinds.

    >>> s = defense_scores({"a": 0.3, "b": 0.0, "c": None}, {"a": "label", "b": "label",
    ...                    "c": "label"}, 0.8, 0.9)
    >>> round(s.dcs["a"], 4), round(s.t_dcs["label"], 4), round(s.c_dcs, 4)
    (0.8173, 0.8756, 0.8756)
    """
    out = DefenseScores()
    for name, leak in leaks.items():
        if leak is not None:
            out.dcs[name] = dcs(leak, accuracy, mp_ideal=reference_accuracy, beta=beta)
    groups: dict[str, list[float]] = {}
    for name, score in out.dcs.items():
        groups.setdefault(kinds[name], []).append(score)
    out.t_dcs = {k: v for k, v in ((k, t_dcs(g)) for k, g in groups.items()) if v is not None}
    out.c_dcs = c_dcs(out.t_dcs, weights)
    return out
