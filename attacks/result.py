"""What an attack reports: :class:`AttackResult` (the record behind ``attacks/<attack>.json``),
what a strength search reports (:class:`Strongest`, its runs :class:`Member`: the record behind
``attacks/<attack>.strongest.json``) and an audit's Markdown table (:func:`report_markdown`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nopeek.attacks.base import LABEL, Known, LabelScores, Reconstruction
from nopeek.attacks.halving import t_interval

_METRICS = ("ssim", "psnr", "mse")
_RECON_KEYS = (*_METRICS, *(f"baseline_{m}" for m in _METRICS), "dcor_reconstruction", "data_range")
_TABULAR_KEYS = ("r2", "r2_per_feature", "rows_within_tolerance", "baseline_rows_within_tolerance")
_TABULAR_KEYS += ("categorical_exact", "baseline_categorical_exact", "categorical_columns")
_TABULAR_KEYS += ("tolerance",)
_LABEL_KEYS = ("auc", "auc_per_epoch", "epochs", "auc_folded", "auc_orientation")
_LABEL_KEYS += ("auc_folded_per_epoch", "auc_folded_max", "auc_folded_max_epoch")
_LABEL_KEYS += ("chance_auc_folded_max",)


@dataclass
class AttackResult:
    """One attack's outcome on one run; :meth:`to_json` is what ``attacks/<name>.json`` holds.

    Every result has ``leak`` in [0, 1]: 0 = no better than a blind guess, 1 = exact
    (:mod:`nopeek.attacks.leak`; None only for a label attack whose AUC is undefined).
    Reconstruction attacks fill ``ssim`` ... ``data_range`` (``ssim`` is ``None`` for tabular
    data) and, on tabular data, ``r2`` ... ``tolerance`` (:func:`~nopeek.attacks.leak.
    tabular_report`, in the data's original units). Label attacks fill ``auc`` (final epoch, as
    the attack names the classes), ``auc_per_epoch``, the folded ``max(auc, 1 - auc)``
    (``auc_folded``, final epoch) with the ``auc_orientation`` it implies (``"as named"`` or
    ``"flipped"``), ``auc_folded_per_epoch``, the worst epoch ``auc_folded_max`` /
    ``auc_folded_max_epoch``, what the same scores reach against permuted labels
    (``chance_auc_folded_max``) and, when the attack makes hard guesses, ``accuracy`` (final
    epoch). ``output`` keeps the raw :class:`Reconstruction` or :class:`LabelScores` (not
    written to JSON).
    """

    attack: str
    kind: str
    threat_model: str
    cut: str
    run: str
    seed: int
    party: str = ""  # whose activations crossed the attacked cut
    receiver: str = ""  # who received them (the attacker, or the gradient sender)
    n_samples: int = 0
    steps: int | None = None
    aux_size: int | None = None
    ssim: float | None = None
    psnr: float | None = None
    mse: float | None = None
    baseline_ssim: float | None = None
    baseline_psnr: float | None = None
    baseline_mse: float | None = None
    dcor_reconstruction: float | None = None
    data_range: float | None = None
    leak: float | None = None
    r2: float | None = None
    r2_per_feature: list[float | None] | None = None
    rows_within_tolerance: float | None = None
    baseline_rows_within_tolerance: float | None = None
    categorical_exact: float | None = None
    baseline_categorical_exact: float | None = None
    categorical_columns: int | None = None
    tolerance: float | None = None
    auc: float | None = None
    auc_per_epoch: list[float | None] | None = None
    epochs: list[int] | None = None
    auc_folded: float | None = None
    auc_orientation: str | None = None
    auc_folded_per_epoch: list[float | None] | None = None
    auc_folded_max: float | None = None
    auc_folded_max_epoch: int | None = None
    chance_auc_folded_max: float | None = None
    accuracy: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    output: Reconstruction | LabelScores | None = field(default=None, repr=False)
    path: Path | None = field(default=None, repr=False)  # the JSON written, if any

    def to_json(self) -> dict[str, Any]:
        """Flat JSON: the shared keys (``leak`` among them) plus this kind's metric keys
        (``None`` -> null; the tabular keys only for tabular reconstructions)."""
        shared = ("attack", "kind", "threat_model", "n_samples", "cut", "party", "receiver")
        shared += ("run", "seed", "steps", "leak")
        out = {k: getattr(self, k) for k in shared}
        if self.aux_size is not None:
            out["aux_size"] = self.aux_size
        if self.kind == LABEL:
            out |= {k: getattr(self, k) for k in _LABEL_KEYS}
            if self.accuracy is not None:
                out["accuracy"] = self.accuracy
        else:
            out |= {k: getattr(self, k) for k in _RECON_KEYS}
            if self.tolerance is not None:
                out |= {k: getattr(self, k) for k in _TABULAR_KEYS}
        keep = {k: v for k, v in self.settings.items() if isinstance(v, (bool, int, float, str))}
        out["settings"] = {k: None if v != v else v for k, v in keep.items()}  # NaN -> null
        return out


# --- a strength search's runs (nopeek.attacks.search) ----------------------------------------
_HEADLINE = ("ssim", "baseline_ssim", "r2", "rows_within_tolerance", "auc_folded_max")


@dataclass
class Member:
    """One attack run of the search: its configuration, rung (``None``: the defaults' extra
    full-strength run), fraction and number of steps, seed, leak and full result."""

    config: dict[str, Any]
    rung: int | None
    fraction: float
    steps: int | None
    seed: int
    leak: float
    result: AttackResult = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        head = {k: getattr(self, k) for k in ("config", "rung", "fraction", "steps", "seed")}
        return head | {"leak": self.leak, "result": self.result.to_json()}


@dataclass
class Strongest:
    """The family search of one attack on one run (module docstring); ``leak`` is the worst
    case, reached by ``worst``; ``winner`` is the survivor of successive halving, with its
    leak over ``seeds``: ``mean``, ``ci95`` (None for one seed) and ``max``."""

    attack: str
    run: str
    cut: str
    party: str
    threat_model: str
    known: Known
    budget: int
    eta: int
    seeds: list[int]
    space: dict[str, tuple[Any, ...]]
    members: list[Member]
    winner: dict[str, Any]
    seconds: float = 0.0
    path: Path | None = None

    @property
    def worst(self) -> Member:
        return max(self.members, key=lambda m: m.leak)  # first of equals: draw order

    @property
    def leak(self) -> float:
        return self.worst.leak

    def winner_leaks(self) -> list[float]:
        final = max(m.rung for m in self.members if m.rung is not None)
        return [m.leak for m in self.members if m.rung == final]

    def to_json(self) -> dict[str, Any]:
        leaks = self.winner_leaks()
        worst = self.worst
        known = {
            "cut_shape": list(self.known.cut_shape),
            "input_shape": list(self.known.input_shape),
            "fresh_noise": self.known.fresh_noise,
            "defender_widths": dict(self.known.defender_widths),
        }
        return {
            "attack": self.attack,
            "run": self.run,
            "cut": self.cut,
            "party": self.party,
            "threat_model": self.threat_model,
            "known": known,
            "budget": self.budget,
            "eta": self.eta,
            "seeds": self.seeds,
            "runs": len(self.members),
            "seconds": self.seconds,
            "space": {k: list(v) for k, v in self.space.items()},
            "leak": self.leak,
            "worst": {k: v for k, v in worst.to_json().items() if k != "result"}
            | {k: v for k, v in worst.result.to_json().items() if k in _HEADLINE},
            "winner": {
                "config": self.winner,
                "leaks": leaks,
                "mean": sum(leaks) / len(leaks),
                "ci95": t_interval(leaks),
                "max": max(leaks),
            },
            "members": [m.to_json() for m in self.members],
        }


# --- an audit's table (nopeek.attacks.audit) --------------------------------------------------
def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def report_markdown(
    results: Sequence[AttackResult], leakage: Mapping[str, Any] | None = None
) -> str:
    """The distance correlation of what crossed with the victims' inputs, then a table: each
    attack's ``leak`` (0 = the blind guess, 1 = exact), SSIM, PSNR and MSE next to the
    mean-image baseline's and, for tabular rows, R2 and the rows within tolerance."""
    lines = ["# nopeek audit", ""]
    if leakage:
        lines += [
            f"Distance correlation between the recorded samples' inputs and what crossed for "
            f"them: {leakage['dcor_inputs_activations']:.4f} (on {leakage['n']} samples; 1 = "
            "the message determines the input up to a similarity transform).",
            "",
        ]
    lines += [
        "Reconstructions of the victims from what the client segment sends, scored against "
        "the victims' inputs; the baseline is the mean aux image (it needs no access to the cut).",
        "",
        "| attack | threat model | victims | leak | SSIM (baseline) | PSNR (baseline) | "
        "MSE (baseline) | R² | rows within tolerance (baseline) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        cells = [_fmt(r.leak)]
        cells += [f"{_fmt(getattr(r, m))} ({_fmt(getattr(r, 'baseline_' + m))})"
                  for m in ("ssim", "psnr", "mse", "rows_within_tolerance")]  # fmt: skip
        cells.insert(4, _fmt(r.r2))
        lines.append(f"| {r.attack} | {r.threat_model} | {r.n_samples} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


__all__ = ["AttackResult", "Member", "Strongest", "report_markdown"]
