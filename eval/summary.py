"""Aggregate result rows per setting: mean and spread over seeds, leak, trade-off score, and
VFLAIR's defense capability scores (DCS per attack, T-DCS per attack kind, C-DCS:
:mod:`nopeek.eval.dcs`).

Per run, the *strongest* attack counts: ``leakage`` is the highest ``leak`` over all the attacks
run (every result row carries ``leak`` in [0, 1], 0 = a blind guess, 1 = exact, whatever the
modality: :mod:`nopeek.attacks.leak`); budgets, the report card and tune read it. Two
modality-specific numbers stay for the figures and the ``--max-ssim`` / ``--max-label-auc``
budgets: ``best_ssim``, the highest SSIM over the image reconstruction attacks, and
``label_auc``, the highest worst-epoch folded AUC over the label attacks (``auc_folded_max``,
:func:`label_leak`). Means and sample standard deviations (``ddof=1``) are then taken over the
seeds of a setting; the trade-off score uses the means. ``bytes_per_sample`` is what one
training sample costs on the wire in an epoch, both directions (activations and gradients, as
the wire log counts them: compressed payloads where the setting compresses).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nopeek.errors import ConfigError
from nopeek.eval import score as S
from nopeek.eval.dcs import DefenseScores, defense_scores


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
    """The worst-epoch folded AUC of one label attack's result row (None without an AUC).

    ``auc_folded_max`` (rows of older releases: ``leak_max``, else the folded
    ``auc_per_epoch``, else the folded ``auc``).

    >>> label_leak({"auc": 0.3, "auc_per_epoch": [0.95, 0.3]})
    0.95
    >>> label_leak({"auc": 0.1, "auc_folded_max": 0.9})
    0.9
    """
    for key in ("auc_folded_max", "leak_max"):
        if row.get(key) is not None:
            return float(row[key])
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
        """The image reconstruction attacks (rows with an SSIM)."""
        return {a: r for a, r in self.attacks.items() if r.get("ssim") is not None}

    def labels(self) -> dict[str, dict[str, Any]]:
        return {a: r for a, r in self.attacks.items() if r.get("auc") is not None}

    def attack_value(self, name: str) -> float | None:
        """The headline number of one attack: its ``leak`` (None for a label attack whose AUC
        is undefined)."""
        return self._leak(name)

    def _leak(self, name: str) -> float | None:
        row = self.attacks[name]
        if "leak" not in row:
            raise ConfigError(
                f"the {name} result of run {self.run} has no 'leak' (an older nopeek wrote it); "
                f"delete {self.run}/attacks/{name}.json and rerun the sweep to attack it again"
            )
        return None if row["leak"] is None else float(row["leak"])

    def best_ssim(self) -> float | None:
        return max((r["ssim"] for r in self.recon().values()), default=None)

    def label_auc(self) -> float | None:
        return max((label_leak(r) for r in self.labels().values()), default=None)

    def leakage(self) -> float | None:
        """The highest ``leak`` over the run's attacks (the strongest attack)."""
        leaks = [self._leak(a) for a in self.attacks]
        return max((v for v in leaks if v is not None), default=None)


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
    leakage: Stat | None  # the runs' worst ``leak`` over the attacks
    score: float | None = None
    extra: dict[str, Stat] = field(default_factory=dict)
    compress: str = ""  # the canonical --compress of the setting ("" uncompressed)
    bytes_per_sample: Stat | None = None
    defense: DefenseScores | None = None  # VFLAIR's DCS / T-DCS / C-DCS (nopeek.eval.dcs)

    @property
    def undefended(self) -> bool:
        return self.alpha == 0 and not self.defenses and not self.compress

    def metric(self, attack: str, key: str) -> Stat | None:
        """Mean and spread over seeds of one attack's result field ``key`` (None if absent)."""
        values = [r.attacks[attack].get(key) for r in self.runs if attack in r.attacks]
        return Stat.of([v for v in values if isinstance(v, (int, float))])


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
        compress=first.metrics.get("compress") or "",
        bytes_per_sample=Stat.of([_bytes_per_sample(r.metrics) for r in runs]),
    )


def _bytes_per_sample(metrics: dict[str, Any]) -> float | None:
    """Bytes a training sample costs in an epoch, both directions (None without the counts).

    >>> _bytes_per_sample({"bytes_client_to_server": 600.0, "bytes_server_to_client": 300.0,
    ...                    "train_samples": 3})
    300.0
    """
    keys = ("bytes_client_to_server", "bytes_server_to_client", "train_samples")
    if any(metrics.get(k) is None for k in keys) or not metrics["train_samples"]:
        return None
    return (metrics[keys[0]] + metrics[keys[1]]) / metrics["train_samples"]


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
        if ref is not None:
            leaks = {a: st.mean for a, st in s.attacks.items()}
            kinds = {a: attack_kind(s, a) for a in leaks}
            s.defense = defense_scores(leaks, kinds, s.accuracy.mean, ref.accuracy.mean)
    return out


def attack_kind(s: SettingSummary, attack: str) -> str:
    """``label`` or ``reconstruction``: the ``kind`` of ``attack``'s rows (rows without one:
    ``label`` when they carry an AUC)."""
    row = next(r.attacks[attack] for r in s.runs if attack in r.attacks)
    if row.get("kind"):
        return str(row["kind"])
    return "label" if "auc" in row else "reconstruction"


def reference(summaries: list[SettingSummary]) -> SettingSummary | None:
    """The undefended setting (alpha 0, no defense), if the sweep has it."""
    return next((s for s in summaries if s.undefended), None)


def meets(
    s: SettingSummary,
    *,
    max_leak: float | None = S.LEAK_THRESHOLD,
    max_ssim: float | None = None,
    max_label_auc: float | None = None,
    max_accuracy_drop: float | None = None,
    reference_accuracy: float | None = None,
) -> bool:
    """Whether the means over seeds are within the budget (None = no limit).

    The strongest attack's ``leak`` at most ``max_leak``; SSIM strictly below ``max_ssim``
    (He et al.'s "unrecognisable", images); the worst-epoch folded label AUC
    (:func:`label_leak`) at most ``max_label_auc``; the accuracy at most ``max_accuracy_drop``
    percentage points below ``reference_accuracy`` (the undefended run's).
    """
    return not budget_misses(
        s,
        max_leak=max_leak,
        max_ssim=max_ssim,
        max_label_auc=max_label_auc,
        max_accuracy_drop=max_accuracy_drop,
        reference_accuracy=reference_accuracy,
    )


def accuracy_drop(s: SettingSummary, reference_accuracy: float) -> float:
    """Percentage points of mean test accuracy ``s`` loses against ``reference_accuracy``."""
    return 100.0 * (reference_accuracy - s.accuracy.mean)


def budget_misses(
    s: SettingSummary,
    *,
    max_leak: float | None = S.LEAK_THRESHOLD,
    max_ssim: float | None = None,
    max_label_auc: float | None = None,
    max_accuracy_drop: float | None = None,
    reference_accuracy: float | None = None,
) -> dict[str, float]:
    """What ``s`` misses of the budget of :func:`meets` and by how much (empty: it meets it).

    Keys ``leak``, ``ssim``, ``label_auc`` (their excess over the limit; SSIM counts its
    equality as a miss of 0) and ``accuracy_drop`` (points above the allowed drop).
    """
    misses: dict[str, float] = {}
    limits = (("leak", s.leakage, max_leak), ("label_auc", s.label_auc, max_label_auc))
    for key, stat, limit in limits:
        if limit is not None and stat is not None and stat.mean > limit:
            misses[key] = stat.mean - limit
    if max_ssim is not None and s.best_ssim is not None and not s.best_ssim.mean < max_ssim:
        misses["ssim"] = s.best_ssim.mean - max_ssim
    if max_accuracy_drop is not None and reference_accuracy is not None:
        drop = accuracy_drop(s, reference_accuracy)
        if drop > max_accuracy_drop:
            misses["accuracy_drop"] = drop - max_accuracy_drop
    return misses


def recommend(
    summaries: list[SettingSummary],
    *,
    max_leak: float | None = S.LEAK_THRESHOLD,
    max_ssim: float | None = None,
    max_label_auc: float | None = None,
    max_accuracy_drop: float | None = None,
) -> SettingSummary | None:
    """The most accurate setting within the budget of :func:`meets`, or None when no setting
    meets it (the accuracy drop is measured against the undefended setting, if swept)."""
    ref = reference(summaries)
    budget = {"max_leak": max_leak, "max_ssim": max_ssim, "max_label_auc": max_label_auc}
    budget |= {"max_accuracy_drop": max_accuracy_drop}
    budget |= {"reference_accuracy": None if ref is None else ref.accuracy.mean}
    ok = [s for s in summaries if meets(s, **budget)]
    return max(ok, key=lambda s: s.accuracy.mean, default=None)
