"""The leakage report: report.md, report.html, report.json and figures/ from finished sweeps.

One section per sweep (a sweep has one data set, task and cut): the settings table (mean ± std
over seeds, trade-off score, Pareto membership), the privacy-utility frontier, leakage curves
against alpha and each defense's strength, original-vs-reconstruction grids and the leakage
report card: the model without a defense and the recommended setting, each attack's verdict as
a sentence in the data's own terms, marked from its ``leak`` (:mod:`nopeek.eval._verdicts`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nopeek.errors import ConfigError
from nopeek.eval import _verdicts as V
from nopeek.eval import communication, plots
from nopeek.eval import score as S
from nopeek.eval.card_search import (
    REPORT_BUDGET,
    SearchedCard,
    default_card_searcher,
    searched_card,
)
from nopeek.eval.frontier import pareto_mask
from nopeek.eval.render import Block, to_html, to_markdown
from nopeek.eval.results import read_results
from nopeek.eval.series import all_series
from nopeek.eval.summary import SettingSummary, Stat, recommend, summarize
from nopeek.eval.sweep import SweepSpec, load_spec
from nopeek.io import atomic_write_bytes, atomic_write_json
from nopeek.rundir import REPORT_ENTRIES, RunDir, staged_entries

TITLE = "nopeek leakage report"


def _fmt(stat: Stat | None, digits: int = 3) -> str:
    return "—" if stat is None else stat.fmt(digits)


# a SettingSummary leakage field -> its name in the report
NAMES = {"leakage": "leak", "best_ssim": "SSIM", "label_auc": "label AUC", "dcor": "dCor"}
NAMES["accuracy"] = "accuracy"


def pareto_sets(summaries: list[SettingSummary]) -> dict[str, list[bool]]:
    """For the leak and each plotted leakage metric every setting has, which settings are
    Pareto-optimal against accuracy."""
    acc = [s.accuracy.mean for s in summaries]
    attrs = ["leakage"] + [attr for attr, _, _ in plots.available(summaries)]
    return {
        attr: pareto_mask(acc, [getattr(s, attr).mean for s in summaries]).tolist()
        for attr in attrs
        if all(getattr(s, attr) is not None for s in summaries)
    }


def monotone(summaries: list[SettingSummary], attr: str) -> bool | None:
    """Whether the mean of ``attr`` never increases with alpha over the settings without a
    defense or a compressor."""
    pts = sorted(
        (s.alpha, getattr(s, attr)) for s in summaries if not s.defenses and not s.compress
    )
    vals = [st.mean for _, st in pts if st is not None]
    if len(vals) < 2:
        return None
    return all(b <= a for a, b in zip(vals, vals[1:]))


def settings_table(summaries: list[SettingSummary], pareto: dict[str, list[bool]]) -> Block:
    attacks = list(dict.fromkeys(a for s in summaries for a in s.attacks))  # with a headline
    header = ["#", "setting", "accuracy", "dCor"] + [_attack_header(summaries, a) for a in attacks]
    header += ["score", "C-DCS", "Pareto-optimal on"]
    rows = []
    for i, s in enumerate(summaries):
        on = [NAMES.get(attr, attr) for attr, mask in pareto.items() if mask[i]]
        row = [str(i + 1), s.label, _fmt(s.accuracy), _fmt(s.dcor)]
        row += [_fmt(s.attacks.get(a)) for a in attacks]
        row += ["—" if s.score is None else f"{s.score:.3f}", _c_dcs(s), ", ".join(on) or "—"]
        rows.append(row)
    return ("table", header, rows)


def _c_dcs(s: SettingSummary) -> str:
    c = None if s.defense is None else s.defense.c_dcs
    return "—" if c is None else f"{c:.3f}"


def _attack_header(summaries: list[SettingSummary], attack: str) -> str:
    return f"{attack} leak"


def report_card(
    summaries: list[SettingSummary],
    *,
    limit: float = S.LEAK_THRESHOLD,
    searched: SearchedCard | None = None,
) -> list[Block]:
    """The model without a defense and the recommended setting: the recommendation with its
    accuracy cost, a table of each attack's leak marked against ``limit``, and each attack's
    verdict as a sentence (:func:`nopeek.eval._verdicts.verdict`).

    With ``searched`` (:func:`nopeek.eval.card_search.searched_card`), both columns and the
    recommendation come from each attack's family search, with the configuration that reached
    the worst case; without, from the sweep's fixed-strength attacks, and the card says that
    those are a lower bound."""
    ref = next((s for s in summaries if s.undefended), None)
    rec = _recommend(summaries, limit)
    drop = f"{S.ACCURACY_DROP_POINTS:g} points"
    blocks: list[Block] = []
    if searched is not None:
        ref, rec = searched.reference or ref, searched.recommended
        blocks.append(("p", _searched_text(searched)))
    else:
        blocks.append(("p", "Leak figures are each attack's at the sweep's fixed strength: a "
                       "lower bound. `nopeek report --attack-budget N` re-attacks the settings "
                       "the card would call safe with each attack's strength search."))  # fmt: skip
    if rec is None:
        rec = max(summaries, key=lambda s: s.score if s.score is not None else -1.0)
        blocks.append(("p", f"**No swept setting keeps every attack's leak at or below {limit} "
                       f"within {drop} of the accuracy without a defense**; the card shows the "
                       f"best-scoring setting, **{rec.label}**, instead. "
                       + V.accuracy_cost(rec, ref)))  # fmt: skip
    else:
        blocks.append(("p", f"Recommended setting: **{rec.label}**, the most accurate setting "
                       f"whose leak stays at or below {limit} under every attack (0 = no better "
                       f"than a blind guess, 1 = exact recovery) and that loses at most {drop} "
                       "of accuracy. " + V.accuracy_cost(rec, ref)))  # fmt: skip
    shown = [] if ref is None else [(ref, "without a defense")]
    if rec.label != (ref.label if ref is not None else None):
        shown.append((rec, f"with {rec.label}"))
    header = ["", "threshold"] + [_column(name, s, searched) for s, name in shown]
    rows = [["test accuracy", "—"] + [_fmt(s.accuracy) for s, _ in shown]]
    for attack in rec.attacks:
        kind = V.modality(rec, attack)
        cells = [_verdict(s.attacks.get(attack), limit, kind) for s, _ in shown]
        rows.append([attack, f"leak ≤ {limit} (0 = blind guess, 1 = exact)", *cells])
    if searched is not None:
        rows.append(["worst attacker found", "—"] + [
            "; ".join(f"{a}: {c}" for a, c in searched.configs.get(s.label, {}).items()) or "—"
            for s, _ in shown])  # fmt: skip
    rows.append(["dCor(input, cut)", "— (0 = independent)"] + [_fmt(s.dcor) for s, _ in shown])
    rows.append(["C-DCS (VFLAIR)", "— (1 = free and perfect)"] + [_c_dcs(s) for s, _ in shown])
    blocks.append(("table", header, rows))
    for s, name in shown:
        sentences = [V.verdict(s, a, limit) for a in rec.attacks if a in s.attacks]
        if sentences:
            blocks += [("p", f"**{name[0].upper()}{name[1:]}:**"), ("list", sentences)]
    return blocks


def _column(name: str, s: SettingSummary, card: SearchedCard | None) -> str:
    """A column's header; on a searched card, whether its figures are searched."""
    if card is None:
        return name
    searched = s.label in card.configs
    return f"{name} ({'searched' if searched else 'fixed strength: a lower bound'})"


def _searched_text(card: SearchedCard) -> str:
    """What the searched card measured: the budget, and each candidate tried with its leak."""
    tried = "; ".join(
        f"{label}: leak {'—' if leak is None else f'{leak:.3f}'}"
        for label, leak in card.tried.items()
    )
    return (f"Leak figures are the worst case of each attack's strength search (budget "
            f"{card.budget} configurations at the first rung, several attack seeds, as "
            f"`nopeek attack --strongest`) for the settings marked searched; a setting that "
            f"already fails at fixed strength is shown with the sweep's figures, a lower bound. "
            f"Settings re-attacked before one held, most accurate first: "
            f"{tried or 'none met the budget at fixed strength'}.")  # fmt: skip


def _recommend(summaries: list[SettingSummary], limit: float = S.LEAK_THRESHOLD):
    """What the card recommends: as ``nopeek tune`` would, by default (leak, accuracy drop)."""
    return recommend(summaries, max_leak=limit, max_accuracy_drop=S.ACCURACY_DROP_POINTS)


def _verdict(stat: Stat | None, limit: float, kind: str) -> str:
    ok, word = V.mark(stat, limit, kind)
    if ok is None:
        return "—"
    return f"leak {stat.fmt()} ({'✓' if ok else '✗'} {word})"


def _setup_text(spec: SweepSpec) -> str:
    b = spec.base
    task = f"class {b.one_vs_rest} vs rest" if b.one_vs_rest is not None else "all classes"
    opts = ", ".join(f"{k}={v}" for k, v in spec.attack_options.items() if v is not None)
    return (
        f"Data set `{b.dataset}` ({task}), model `{b.model}`, cut `{b.cut}`, {b.epochs} epochs, "
        f"seeds {', '.join(map(str, spec.seeds))}; attacks: {', '.join(spec.attacks) or 'none'}"
        + (f" ({opts})" if opts else "")
        + ". Numbers are mean ± sample std over seeds."
    )


def sweep_section(
    sweep: Path,
    spec: SweepSpec,
    summaries: list[SettingSummary],
    out: Path,
    name: str,
    searched: SearchedCard | None = None,
) -> tuple[list[Block], dict[str, Any]]:
    """The blocks of one sweep's section and its machine-readable summary (``searched``: the
    card's figures from each attack's strength search, see :mod:`nopeek.eval.card_search`)."""
    b = spec.base
    blocks: list[Block] = [("h2", f"{b.dataset}, cut {b.cut}" + (
        f", one-vs-rest {b.one_vs_rest}" if b.one_vs_rest is not None else ""))]  # fmt: skip
    blocks.append(("p", _setup_text(spec)))
    pareto = pareto_sets(summaries)
    blocks += [("h3", "Settings"), settings_table(summaries, pareto)]
    blocks += [("h3", "Leakage report card")] + report_card(summaries, searched=searched)
    fig = plots.frontier_figure(summaries, out / "figures" / f"{name}-frontier.png")
    if fig is not None:
        blocks += [("h3", "Privacy-utility frontier"), ("img", f"figures/{fig.name}", "frontier")]
    blocks += communication.section(summaries, out, name)
    trends = {a: monotone(summaries, a) for a in ("accuracy", "leakage", "dcor")}
    for i, series in enumerate(all_series(summaries)):
        fig = plots.curves_figure(series, out / "figures" / f"{name}-curve{i}.png")
        blocks += [("h3", f"{series.title} vs {series.knob}"), ("img", f"figures/{fig.name}", "")]
    said = [f"{NAMES[k]}: {'non-increasing' if v else 'not monotone'}" for k, v in trends.items()
            if v is not None]  # fmt: skip
    if said:
        blocks.append(("p", "Mean over seeds as alpha grows (no defense): " + "; ".join(said)))
    for attack in dict.fromkeys(a for s in summaries for r in s.runs for a in r.recon()):
        fig = plots.reconstruction_grid(summaries, sweep, attack, out / "figures" /
                                        f"{name}-{attack}-grid.png")  # fmt: skip
        if fig is not None:
            seed = summaries[0].runs[0].seed
            blocks += [("h3", f"Reconstructions: {attack}"),
                       ("p", f"Per setting, the run with seed {seed}: test images (top row) "
                        "over the attack's reconstructions (bottom row), SSIM under each."),
                       ("img", f"figures/{fig.name}", f"{attack} reconstructions")]  # fmt: skip
    data = _section_json(sweep, spec, summaries, pareto, trends)
    if searched is not None:
        data["card_search"] = _card_json(searched)
    return blocks, data


def _card_json(card: SearchedCard) -> dict[str, Any]:
    """The searched card's figures for report.json: budget, candidates tried, and per shown
    setting each attack's searched worst leak and configuration."""

    def shown(s: SettingSummary | None) -> dict[str, Any] | None:
        if s is None:
            return None
        leaks = {a: st.mean for a, st in s.attacks.items()}
        return {"label": s.label, "leak": leaks, "worst_config": card.configs.get(s.label, {})}

    return {"budget": card.budget, "tried": card.tried,
            "reference": shown(card.reference), "recommended": shown(card.recommended)}  # fmt: skip


def _section_json(sweep, spec, summaries, pareto, trends) -> dict[str, Any]:
    def stat(st: Stat | None):
        return None if st is None else {"mean": st.mean, "std": st.std, "n": st.n}

    rec = _recommend(summaries)
    settings = [
        {
            "setting": s.setting,
            "label": s.label,
            "alpha": s.alpha,
            "defenses": s.defenses,
            "accuracy": stat(s.accuracy),
            "dcor": stat(s.dcor),
            "best_ssim": stat(s.best_ssim),
            "label_auc": stat(s.label_auc),
            "leakage": stat(s.leakage),
            "compress": s.compress,
            "bytes_per_sample": stat(s.bytes_per_sample),
            "compressor_acts_as_defense": communication.acts_as_defense(s, summaries),
            "score": s.score,
            "defense_scores": None if s.defense is None else s.defense.to_json(),
            "attacks": {a: stat(v) for a, v in s.attacks.items()},
            "pareto": {k: v[i] for k, v in pareto.items()},
        }  # fmt: skip
        for i, s in enumerate(summaries)
    ]
    return {
        "sweep": str(sweep), "cut": spec.base.cut, "dataset": spec.base.dataset,
        "one_vs_rest": spec.base.one_vs_rest, "settings": settings,
        "recommended": rec.setting if rec else None, "non_increasing_in_alpha": trends,
    }  # fmt: skip


_SCORE = (
    "**Score** (after VFLAIR's defense capability score): score = 1 / (1 + sqrt((1 − β)·dA² + "
    "β·dL²)), β = 0.5, dA = max(0, accuracy without a defense − accuracy), dL = the strongest "
    "attack's leak. 1 = a free and perfect defense. **C-DCS** (VFLAIR's comprehensive "
    "defense capability score, Zou et al. 2024): DCS = 1 / (1 + sqrt((1 − β)·dAP² + β·dMP²)) "
    "per attack with AP = its leak and MP = accuracy against the ideal (AP 0, MP without a "
    "defense), averaged per attack kind (T-DCS), then over kinds (C-DCS)."
)
METHOD = [
    ("h2", "How to read this report"),
    ("list", [
        "**Leak.** Every attack is scored in the data's own terms and then as a leak between 0 "
        "(no better than a blind guess, which never looks at the cut: the mean of the "
        "attacker's own samples) and 1 (exact recovery). Images: SSIM above the blind guess's "
        "SSIM, (SSIM − blind)/(1 − blind). Table rows: R² against the blind guess per feature, "
        "in the data's original units, clipped to [0, 1] and averaged over features; the card "
        "also gives the share of rows recovered within 5 % of every feature's range and of "
        "categorical values recovered exactly. Labels: the AUC of the attack's scores at the "
        "training epoch where it does best (folded: max(AUC, 1 − AUC), since an attacker can "
        "flip a guess), above what the same scores reach against shuffled labels, which picking "
        "the best of many epochs lifts above 0.5. Each setting counts its strongest attack.",
        "**Pareto-optimal**: no other setting has accuracy ≥ and leakage ≤ with one strict.",
        f"**Threshold.** leak ≤ {S.LEAK_THRESHOLD}: a fifth of the way from a blind guess to "
        f"exact recovery. For images, He et al. (ACSAC 2019) count SSIM < {S.SSIM_THRESHOLD} as "
        "unrecognisable; on small images a blind guess already scores about that (0.33 on 8x8 "
        "digits), which is why the card measures SSIM from the blind guess up.",
        "**dCor**: distance correlation between test inputs and what crosses the cut "
        "(0 = independent).",
        _SCORE,
    ]),
]  # fmt: skip


def write_report(
    sweeps: Sequence[str | Path],
    out: str | Path,
    *,
    title: str = TITLE,
    attack_budget: int = REPORT_BUDGET,
) -> Path:
    """Write report.md, report.html, report.json and figures/ for ``sweeps`` into ``out``.

    Before the card calls a setting safe, each attack's strength search re-attacks it with
    ``attack_budget`` configurations at the first rung (:mod:`nopeek.eval.card_search`; its
    results land in the runs' ``attacks/`` folders); 0 keeps the sweep's fixed-strength figures.

    The sweeps are read first. ``out`` must be new, empty, or a report folder nopeek wrote (a
    file, a link or another folder is refused, see :mod:`nopeek.rundir`); the report is written
    into a hidden staging folder and moved in only once complete, so a failure leaves the old
    report as it was. Anything else in ``out`` (the default sweeps in ``out/sweeps``) is kept.
    """
    out = Path(out)
    if isinstance(attack_budget, bool) or not isinstance(attack_budget, int) or attack_budget < 0:
        raise ConfigError(
            "--attack-budget must be a whole number >= 0 (configurations at the first rung of "
            f"each attack's search; 0: the sweep's fixed-strength figures), got {attack_budget!r}"
        )
    loaded = [(s, load_spec(s), summarize(read_results(s))) for s in map(Path, sweeps)]
    with (
        RunDir(out, "report").writing(reuse=True) as folder,
        staged_entries(folder, REPORT_ENTRIES) as staging,
    ):  # ``out`` is checked before the (costly) searches
        cards = [None if not attack_budget else searched_card(
            summaries, sweep, default_card_searcher(spec, attack_budget), budget=attack_budget)
            for sweep, spec, summaries in loaded]  # fmt: skip
        _render(loaded, staging, title, cards)
    return out / "report.md"


def _render(
    loaded: list[tuple[Path, SweepSpec, list[SettingSummary]]],
    out: Path,
    title: str,
    cards: Sequence[SearchedCard | None],
) -> None:
    """The report files of the ``(sweep, spec, summaries)`` in ``loaded`` (and each one's
    searched card or None), written into ``out``."""
    blocks: list[Block] = [("h1", title)]
    sections = []
    names: set[str] = set()
    for (sweep, spec, summaries), card in zip(loaded, cards, strict=True):
        name = re.sub(r"[^A-Za-z0-9_-]", "-", sweep.name) or "sweep"
        name = name if name not in names else f"{name}-{len(names)}"
        names.add(name)
        section, data = sweep_section(sweep, spec, summaries, out, name, card)
        blocks += section
        sections.append(data)
    blocks += METHOD
    atomic_write_bytes(out / "report.md", to_markdown(blocks).encode())
    atomic_write_bytes(out / "report.html", to_html(blocks, root=out, title=title).encode())
    atomic_write_json(out / "report.json", {"sections": sections})
