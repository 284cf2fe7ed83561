"""The report card's "safe" re-checked by the strongest attacker the budget finds.

A sweep attacks every setting at one fixed strength per attack, which is a lower bound on what
an attacker gets. Before the card calls a setting safe, :func:`searched_card` re-attacks it
with each attack's family search (:func:`nopeek.attacks.search.strongest`, the same search as
``nopeek attack --strongest`` and ``nopeek tune``'s certification, seeds of its own included) on
every seed's run, and replaces each attack's figures by the worst member's. The card then
recommends the most accurate setting that still meets the budget under the search, trying the
candidates in order of accuracy. A setting that fails at fixed strength is not searched (a
stronger attacker only confirms it), and the card marks which figures are searched.

The settings table, the frontier and the curves keep the sweep's fixed-strength figures (every
setting measured alike); the card says which figures are searched and with which budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nopeek.eval import score as S
from nopeek.eval.summary import SettingSummary, meets, reference, summarize
from nopeek.eval.sweep import SweepSpec

# (run dir, attack name, party or None, seed) -> a Strongest (nopeek.attacks.search)
Searcher = Callable[[Path, str, "str | None", int], Any]
MAX_CANDIDATES = 3  # settings the card re-attacks before it says none holds
REPORT_BUDGET = 2  # `nopeek report`'s default --attack-budget: keeps `make run` in its time


@dataclass
class SearchedCard:
    """What the card shows: the undefended setting with searched figures if it was a candidate
    (else None), the recommended one (None: no candidate held), the candidates tried (label ->
    searched worst leak) and each searched attack's worst configuration per setting label."""

    reference: SettingSummary | None
    recommended: SettingSummary | None
    tried: dict[str, float | None] = field(default_factory=dict)
    configs: dict[str, dict[str, str]] = field(default_factory=dict)
    budget: int = REPORT_BUDGET


def _split_stem(stem: str) -> tuple[str, str | None]:
    """``white-box@client1`` -> (``white-box``, ``client1``); a bare name -> (name, None)."""
    name, _, party = stem.partition("@")
    return name, party or None


def _config_text(config: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items() if v is not None) or "defaults"


def searched_rows(
    s: SettingSummary, sweep: Path, searcher: Searcher
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The result rows of ``s``'s runs with each attack's figures replaced by the worst member
    of its family search on that run where it beats the sweep's own attack (a member of the
    family too), and each attack's worst configuration over the runs (``the sweep's`` where
    the sweep's attack was the worst)."""
    rows, worst = [], {}
    for run in s.runs:
        if not run.attacks:  # a run of a sweep without attacks: its metrics row alone
            rows.append(dict(run.metrics))
        for stem, row in run.attacks.items():
            name, party = _split_stem(stem)
            found = searcher(sweep / run.run, name, party, run.seed)
            new, leak, config = dict(row), row.get("leak"), "the sweep's"
            if leak is None or found.leak > leak:  # the sweep's own attack is a member too
                for key, value in found.worst.result.to_json().items():
                    if key != "attack":
                        new[f"attack_{key}" if f"attack_{key}" in row else key] = value
                leak, config = found.leak, _config_text(found.worst.config)
            new["leak"] = leak
            rows.append(new)
            if stem not in worst or leak > worst[stem][0]:
                worst[stem] = (leak, config)
    return rows, {stem: text for stem, (_, text) in worst.items()}


def searched_card(
    summaries: list[SettingSummary],
    sweep: Path,
    searcher: Searcher,
    *,
    limit: float = S.LEAK_THRESHOLD,
    budget: int = REPORT_BUDGET,
    max_candidates: int = MAX_CANDIDATES,
) -> SearchedCard:
    """Search, in order of accuracy, the settings that meet the card's budget at fixed strength
    until one still meets it (at most ``max_candidates``). A setting that already fails at fixed
    strength (the undefended one, usually) is not searched: a stronger attacker only confirms
    it; the card marks its figures as fixed-strength."""
    ref = reference(summaries)
    ref_accuracy = None if ref is None else ref.accuracy.mean
    budget_kw = {"max_leak": limit, "max_accuracy_drop": S.ACCURACY_DROP_POINTS,
                 "reference_accuracy": ref_accuracy}  # fmt: skip
    card = SearchedCard(None, None, budget=budget)

    def search(s: SettingSummary) -> SettingSummary:
        rows, configs = searched_rows(s, sweep, searcher)
        found = summarize(rows)[0]
        card.configs[s.label] = configs
        return found

    candidates = [s for s in summaries if meets(s, **budget_kw)]
    candidates.sort(key=lambda s: -s.accuracy.mean)
    for s in candidates[:max_candidates]:
        found = search(s)
        if s is ref:
            card.reference = found
        card.tried[s.label] = None if found.leakage is None else found.leakage.mean
        if meets(found, **budget_kw):
            card.recommended = found
            break
    return card


def default_card_searcher(spec: SweepSpec, budget: int) -> Searcher:
    """The family search of each of ``spec``'s attacks, as ``nopeek attack --strongest`` runs
    it (defense-aware queries, the client's own decoders named), with the compute the sweep gave
    that attack pinned: its ``steps`` and victims (``n_samples``), from the sweep's shared
    ``--steps`` / ``--n-samples`` or the attack's own options (``white-box:steps=300``); every
    other knob is searched. ``budget``: configurations at the first rung."""
    from nopeek.attacks.search import strongest
    from nopeek.attacks.spec import parse_attack
    from nopeek.defenses import run_sender
    from nopeek.defenses.knowledge import simulated_decoders

    shared = {k: v for k, v in (spec.attack_options or {}).items() if v is not None}
    own = {name: options for name, options in map(parse_attack, spec.attacks)}

    def search(run: Path, name: str, party: str | None, seed: int) -> Any:
        given = shared | own.get(name, {})
        pinned = {k: given[k] for k in ("steps", "aux_size") if k in given}
        return strongest(
            run, name, budget=budget, seed=seed, pinned=pinned, n_samples=given.get("n_samples"),
            party=party, sender=run_sender, defender_decoders=simulated_decoders,
        )  # fmt: skip

    return search
