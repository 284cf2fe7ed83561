"""The report card's verdicts as sentences a privacy officer reads without nopeek's vocabulary.

Each verdict names what the attacker had (from the result's ``threat_model`` and ``aux_size``),
what it recovered in the data's own terms (SSIM for images, R2 and rows within tolerance for
tabular rows, AUC for labels) next to what a blind guess gets, and a mark from ``leak``.
"""

from __future__ import annotations

from nopeek.eval.summary import SettingSummary, Stat

IMAGES, ROWS, LABELS = "images", "rows", "labels"
_GRANTS = {  # threat-model flag -> what the attacker had, as a clause
    "activations": "sees what your client sends across the cut",
    "gradients": "sees the gradients sent back across the cut during training",
    "client_weights": "holds a copy of your client model",
    "query_client": "can query your client model",
    "client_architecture": "knows your client model's architecture",
    "aux_activations": "knows what crossed the cut for its own samples",
    "sent_activations": "sees what it sent across the cut",
    "tail_architecture": "knows the model's architecture after the cut",
}


def modality(s: SettingSummary, attack: str) -> str:
    """What ``attack`` went after in ``s``'s runs: ``images``, ``rows`` or ``labels``."""
    row = next(r.attacks[attack] for r in s.runs if attack in r.attacks)
    if row.get("ssim") is not None:
        return IMAGES
    return LABELS if "auc" in row else ROWS


def attacker(s: SettingSummary, attack: str) -> str:
    """``"An attacker who sees ..., holds ... and has 360 samples of its own"``.

    >>> from nopeek.eval.summary import RunSummary
    >>> run = RunSummary("a", "a", 0, "r", {}, {"w": {"threat_model": "activations+aux_data+"
    ...     "query_client", "aux_size": 360}})
    >>> s = SettingSummary("a", "a", 0.0, "", [run], Stat(0.9, None, 1), None, {}, None, None,
    ...                    None)
    >>> attacker(s, "w")
    'An attacker who sees what your client sends across the cut, can query your client model and has 360 samples of its own'
    """  # noqa: E501
    row = next(r.attacks[attack] for r in s.runs if attack in r.attacks)
    grants = str(row.get("threat_model") or "").split("+")
    clauses = [_GRANTS[g] for g in grants if g in _GRANTS]
    if "aux_data" in grants:
        labelled = " labelled" if "aux_labels" in grants else ""
        size = row.get("aux_size")
        clauses.append(f"has {size}{labelled} samples of its own" if size else
                       f"has{labelled} samples of its own")  # fmt: skip
    if not clauses:
        return "An attacker"
    said = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
    return f"An attacker who {said}"


def _mean(s: SettingSummary, attack: str, key: str) -> float | None:
    stat = s.metric(attack, key)
    return None if stat is None else stat.mean


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f} %"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def mark(stat: Stat | None, limit: float, kind: str) -> tuple[bool | None, str]:
    """(within ``limit``?, the word): unrecognisable / recognisable for images, safe / leaks
    for the rest; (None, "not measured") without a leak."""
    if stat is None:
        return None, "not measured"
    ok = stat.mean <= limit
    if kind == IMAGES:
        return ok, "unrecognisable" if ok else "recognisable"
    return ok, "safe" if ok else "leaks"


def verdict(s: SettingSummary, attack: str, limit: float) -> str:
    """One attack on one setting, as a sentence (means over seeds)."""
    kind = modality(s, attack)
    who = attacker(s, attack)
    if kind == IMAGES:
        what = (f"reconstructs your test images at SSIM {_num(_mean(s, attack, 'ssim'))} "
                f"(a blind guess: {_num(_mean(s, attack, 'baseline_ssim'))})")  # fmt: skip
    elif kind == ROWS:
        tol = _mean(s, attack, "tolerance")
        within = "rows within tolerance" if tol is None else f"rows within {100 * tol:g} % of"
        what = (f"recovers your rows with R² {_num(_mean(s, attack, 'r2'))} ({within} every "
                f"feature's range: {_pct(_mean(s, attack, 'rows_within_tolerance'))}; a blind "
                f"guess: {_pct(_mean(s, attack, 'baseline_rows_within_tolerance'))})")  # fmt: skip
        exact = _mean(s, attack, "categorical_exact")
        if exact is not None:
            blind = _pct(_mean(s, attack, "baseline_categorical_exact"))
            what += f", and {_pct(exact)} of your categorical values exactly (blind: {blind})"
    else:
        what = (f"infers your training labels with AUC "
                f"{_num(_mean(s, attack, 'auc_folded_max'))} at its best epoch (chance for as "
                f"many epochs: {_num(_mean(s, attack, 'chance_auc_folded_max'))})")  # fmt: skip
    stat = s.attacks.get(attack)
    word = mark(stat, limit, kind)[1]
    leak = "" if stat is None else f" (leak {stat.mean:.2f} of 1)"
    return f"{who} {what}: **{word}**{leak}."


def accuracy_cost(rec: SettingSummary, ref: SettingSummary | None) -> str:
    """``It costs 3.0 points of test accuracy (98.0 % without a defense, 95.0 % with it).``"""
    if ref is None:
        return "The sweep has no undefended setting, so its accuracy cost is not known."
    if rec is ref:
        return "It costs no accuracy: it is the model without a defense."
    drop = 100 * (ref.accuracy.mean - rec.accuracy.mean)
    cost = f"costs {drop:.1f} points" if drop >= 0 else f"gains {-drop:.1f} points"
    return (f"It {cost} of test accuracy ({_pct_1(ref.accuracy.mean)} without a defense, "
            f"{_pct_1(rec.accuracy.mean)} with it).")  # fmt: skip


def _pct_1(value: float) -> str:
    return f"{100 * value:.1f} %"
