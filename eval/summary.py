"""Aggregate result rows per setting: mean and spread over seeds, leakage, trade-off score.

Per run, the *strongest* attack counts: ``best_ssim`` is the highest SSIM over the
reconstruction attacks, ``label_auc`` the highest label leak over the label attacks, and
``leakage`` the highest normalised leakage over all attacks (see :mod:`nopeek.eval.score`).
A label attack's leak is its worst epoch, the one an attacker watching training could pick:
``leak_max`` = the largest ``max(auc, 1 - auc)`` over the epochs (:func:`label_leak`; rows
written before the harness reported ``leak_max`` fall back to ``auc_per_epoch``, then ``auc``).
Means and sample standard deviations (``ddof=1``) are then taken over
the seeds of a setting; the trade-off score uses the means.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nopeek.errors import ConfigError
from nopeek.eval import score as S


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation of ``n`` values (``std`` is None for one value)."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat | None:
        """>>> Stat.of([1.0, 3.0])
        Stat(mean=2.0, std=1.414..., n=2)
        """
        vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
        if not vals:
            return None
        std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        return cls(float(np.mean(vals)), std, len(vals))

    def fmt(self, digits: int = 3) -> str:
        """``0.912 ± 0.004`` (``0.912`` for one seed)."""
        text = f"{self.mean:.{digits}f}"
        return text if self.std is None else f"{text} ± {self.std:.{digits}f}"


def label_leak(row: dict[str, Any]) -> float | None:
    """The worst-epoch leak of one label attack's result row (None when it has no AUC).

    >>> label_leak({"auc": 0.3, "auc_per_epoch": [0.95, 0.3]})
    0.95
    >>> label_leak({"auc": 0.1, "leak_max": 0.9})
    0.9
    """
    if row.get("leak_max") is not None:
        return float(row["leak_max"])
    per = [a for a in (row.get("auc_per_epoch") or []) if a is not None]
    if per:
        return max(S.symmetric_auc(a) for a in per)
    return S.symmetric_auc(row["auc"]) if row.get("auc") is not None else None


@dataclass
class RunSummary:
    """One run: its training metrics and the attack rows keyed by attack name."""

    setting: str
    label: str
    seed: int
    run: str
    metrics: dict[str, Any]
    attacks: dict[str, dict[str, Any]]

    def recon(self) -> dict[str, dict[str, Any]]:
        return {a: r for a, r in self.attacks.items() if r.get("ssim") is not None}

    def labels(self) -> dict[str, dict[str, Any]]:
        return {a: r for a, r in self.attacks.items() if r.get("auc") is not None}

    def attack_value(self, name: str) -> float | None:
        """The headline number of one attack: SSIM, or the label leak at its worst epoch
        (:func:`label_leak`; None for neither, e.g. a reconstruction of tabular data)."""
        row = self.attacks[name]
        if row.get("ssim") is not None:
            return row["ssim"]
        return label_leak(row)

    def best_ssim(self) -> float | None:
        return max((r["ssim"] for r in self.recon().values()), default=None)

    def label_auc(self) -> float | None:
        return max((label_leak(r) for r in self.labels().values()), default=None)

    def leakage(self) -> float | None:
        recon = self.recon().values()
        rec = [S.reconstruction_leakage(r["ssim"], r["baseline_ssim"]) for r in recon]
        lab = [S.label_leakage(label_leak(r)) for r in self.labels().values()]
        return max(rec + lab, default=None)


@dataclass
class SettingSummary:
    """One setting over its seeds."""

    setting: str
    label: str
    alpha: float
    defenses: str
    runs: list[RunSummary]
    accuracy: Stat
    dcor: Stat | None
    attacks: dict[str, Stat]
    best_ssim: Stat | None
    label_auc: Stat | None
    leakage: Stat | None
    score: float | None = None
    extra: dict[str, Stat] = field(default_factory=dict)

    @property
    def undefended(self) -> bool:
        return self.alpha == 0 and not self.defenses


def group_runs(rows: list[dict[str, Any]]) -> list[RunSummary]:
    """Rows (one per run x attack) -> one :class:`RunSummary` per run, in row order."""
    runs: dict[str, RunSummary] = {}
    for row in rows:
        key = row["run"]
        if key not in runs:
            runs[key] = RunSummary(row["setting"], row["label"], row["seed"], key, row, {})
        if row.get("attack"):
            runs[key].attacks[row["attack"]] = row
    return list(runs.values())


def _summarize(runs: list[RunSummary]) -> SettingSummary:
    first = runs[0]
    names = list(dict.fromkeys(a for r in runs for a in r.attacks))
    stats = {a: Stat.of([r.attack_value(a) for r in runs if a in r.attacks]) for a in names}
    extra_keys = [k for k in ("epsilon_cut", "epsilon_dpsgd") if k in first.metrics]
    return SettingSummary(
        setting=first.setting,
        label=first.label,
        alpha=float(first.metrics["alpha"]),
        defenses=first.metrics.get("defenses") or "",
        runs=runs,
        accuracy=Stat.of([r.metrics["test_accuracy"] for r in runs]),
        dcor=Stat.of([r.metrics.get("dcor_test") for r in runs]),
        attacks={a: st for a, st in stats.items() if st is not None},
        best_ssim=Stat.of([r.best_ssim() for r in runs]),
        label_auc=Stat.of([r.label_auc() for r in runs]),
        leakage=Stat.of([r.leakage() for r in runs]),
        extra={k: Stat.of([r.metrics.get(k) for r in runs]) for k in extra_keys},
    )


def summarize(rows: list[dict[str, Any]]) -> list[SettingSummary]:
    """Per-setting summaries in sweep order, with trade-off scores against the undefended one."""
    if not rows:
        raise ConfigError("the sweep has no results; run `nopeek sweep` first")
    by_setting: dict[str, list[RunSummary]] = defaultdict(list)
    for run in group_runs(rows):
        by_setting[run.setting].append(run)
    out = [_summarize(runs) for runs in by_setting.values()]
    ref = reference(out)
    for s in out:
        if ref is not None and s.leakage is not None:
            s.score = S.tradeoff_score(s.accuracy.mean, ref.accuracy.mean, s.leakage.mean)
    return out


def reference(summaries: list[SettingSummary]) -> SettingSummary | None:
    """The undefended setting (alpha 0, no defense), if the sweep has it."""
    return next((s for s in summaries if s.undefended), None)


def meets(
    s: SettingSummary,
    *,
    max_ssim: float | None = S.SSIM_THRESHOLD,
    max_label_auc: float | None = S.LABEL_AUC_THRESHOLD,
) -> bool:
    """Whether the mean leakage over seeds is within the budget (None = no limit).

    SSIM must be strictly below ``max_ssim`` (He et al.'s "unrecognisable"), the label leak
    (worst epoch, folded: :func:`label_leak`) at most ``max_label_auc``.
    """
    if max_ssim is not None and s.best_ssim is not None and not s.best_ssim.mean < max_ssim:
        return False
    return not (
        max_label_auc is not None and s.label_auc is not None and s.label_auc.mean > max_label_auc
    )


def recommend(
    summaries: list[SettingSummary],
    *,
    max_ssim: float | None = S.SSIM_THRESHOLD,
    max_label_auc: float | None = S.LABEL_AUC_THRESHOLD,
) -> SettingSummary | None:
    """The most accurate setting within the budget, or None when no setting meets it."""
    ok = [s for s in summaries if meets(s, max_ssim=max_ssim, max_label_auc=max_label_auc)]
    return max(ok, key=lambda s: s.accuracy.mean, default=None)
