"""The leakage report: report.md, report.html, report.json and figures/ from finished sweeps.

One section per sweep (a sweep has one data set, task and cut): the settings table (mean ± std
over seeds, trade-off score, Pareto membership), the privacy-utility frontier, leakage curves
against alpha and each defense's strength, original-vs-reconstruction grids and the leakage
report card (undefended vs recommended setting against thresholds from the literature).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nopeek.eval import plots
from nopeek.eval import score as S
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


def pareto_sets(summaries: list[SettingSummary]) -> dict[str, list[bool]]:
    """For each available leakage metric, which settings are Pareto-optimal against accuracy."""
    acc = [s.accuracy.mean for s in summaries]
    return {
        attr: pareto_mask(acc, [getattr(s, attr).mean for s in summaries]).tolist()
        for attr, _, _ in plots.available(summaries)
    }


def monotone(summaries: list[SettingSummary], attr: str) -> bool | None:
    """Whether the mean of ``attr`` never increases with alpha over the defense-free settings."""
    pts = sorted((s.alpha, getattr(s, attr)) for s in summaries if not s.defenses)
    vals = [st.mean for _, st in pts if st is not None]
    if len(vals) < 2:
        return None
    return all(b <= a for a, b in zip(vals, vals[1:]))


def settings_table(summaries: list[SettingSummary], pareto: dict[str, list[bool]]) -> Block:
    attacks = list(dict.fromkeys(a for s in summaries for a in s.attacks))  # with a headline
    header = ["#", "setting", "accuracy", "dCor"] + [_attack_header(summaries, a) for a in attacks]
    header += ["score", "Pareto-optimal on"]
    rows = []
    for i, s in enumerate(summaries):
        on = [attr.replace("best_", "") for attr, mask in pareto.items() if mask[i]]
        row = [str(i + 1), s.label, _fmt(s.accuracy), _fmt(s.dcor)]
        row += [_fmt(s.attacks.get(a)) for a in attacks]
        row += ["—" if s.score is None else f"{s.score:.3f}", ", ".join(on) or "—"]
        rows.append(row)
    return ("table", header, rows)


def _attack_header(summaries: list[SettingSummary], attack: str) -> str:
    run = next(r for s in summaries for r in s.runs if r.attack_value(attack) is not None)
    is_recon = run.attacks[attack].get("ssim") is not None
    return f"{attack} SSIM" if is_recon else f"{attack} leak (worst epoch)"


def report_card(summaries: list[SettingSummary]) -> list[Block]:
    """Undefended vs recommended setting, per attack, against the literature's thresholds."""
    ref = next((s for s in summaries if s.undefended), None)
    rec = recommend(summaries)
    blocks: list[Block] = []
    if rec is None:
        rec = max(summaries, key=lambda s: s.score if s.score is not None else -1.0)
        blocks.append(("p", "**No swept setting meets every threshold**; the card shows the "
                       f"best-scoring setting, {rec.label}, instead."))  # fmt: skip
    else:
        blocks.append(("p", f"Recommended setting: **{rec.label}** (the most accurate setting "
                       "whose mean leakage meets every threshold below)."))  # fmt: skip
    header = ["", "threshold", f"undefended ({ref.label if ref else 'not swept'})", rec.label]
    rows = [["test accuracy", "—", _fmt(ref.accuracy) if ref else "—", _fmt(rec.accuracy)]]
    for attack in rec.attacks:
        is_recon = rec.runs[0].attacks[attack].get("ssim") is not None
        limit = S.SSIM_THRESHOLD if is_recon else S.LABEL_AUC_THRESHOLD
        thr = "SSIM < {} (He et al. 2019)" if is_recon else "leak ≤ {} (chance 0.5)"
        thr = thr.format(limit)
        stats = [s.attacks.get(attack) if s else None for s in (ref, rec)]
        cells = [_verdict(st, limit, is_recon) for st in stats]
        rows.append([attack, thr, *cells])
    rows.append(["dCor(input, cut)", "— (0 = independent)", _fmt(ref.dcor if ref else None),
                 _fmt(rec.dcor)])  # fmt: skip
    blocks.append(("table", header, rows))
    return blocks


def _verdict(stat: Stat | None, limit: float, is_recon: bool) -> str:
    if stat is None:
        return "—"
    ok = stat.mean < limit if is_recon else stat.mean <= limit
    word = ("unrecognisable" if ok else "recognisable") if is_recon else ("safe" if ok else "leaks")
    return f"{stat.fmt()} ({'✓' if ok else '✗'} {word})"


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
    sweep: Path, spec: SweepSpec, summaries: list[SettingSummary], out: Path, name: str
) -> tuple[list[Block], dict[str, Any]]:
    """The blocks of one sweep's section and its machine-readable summary."""
    b = spec.base
    blocks: list[Block] = [("h2", f"{b.dataset}, cut {b.cut}" + (
        f", one-vs-rest {b.one_vs_rest}" if b.one_vs_rest is not None else ""))]  # fmt: skip
    blocks.append(("p", _setup_text(spec)))
    pareto = pareto_sets(summaries)
    blocks += [("h3", "Settings"), settings_table(summaries, pareto)]
    blocks += [("h3", "Leakage report card")] + report_card(summaries)
    fig = plots.frontier_figure(summaries, out / "figures" / f"{name}-frontier.png")
    if fig is not None:
        blocks += [("h3", "Privacy-utility frontier"), ("img", f"figures/{fig.name}", "frontier")]
    trends = {a: monotone(summaries, a) for a in ("accuracy", "best_ssim", "label_auc", "dcor")}
    for i, series in enumerate(all_series(summaries)):
        fig = plots.curves_figure(series, out / "figures" / f"{name}-curve{i}.png")
        blocks += [("h3", f"{series.title} vs {series.knob}"), ("img", f"figures/{fig.name}", "")]
    said = [f"{k}: {'non-increasing' if v else 'not monotone'}" for k, v in trends.items()
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
    return blocks, _section_json(sweep, spec, summaries, pareto, trends)


def _section_json(sweep, spec, summaries, pareto, trends) -> dict[str, Any]:
    def stat(st: Stat | None):
        return None if st is None else {"mean": st.mean, "std": st.std, "n": st.n}

    rec = recommend(summaries)
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
            "score": s.score,
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
    "β·dL²)), β = 0.5, dA = max(0, undefended accuracy − accuracy), dL = the strongest attack's "
    "leakage scaled to [0, 1]: (SSIM − baseline SSIM)/(1 − baseline SSIM) for reconstructions, "
    "2·(leak − 0.5) for labels (leak at the worst epoch). 1 = a free and perfect defense."
)
METHOD = [
    ("h2", "How to read this report"),
    ("list", [
        "**Leakage metrics.** SSIM between test inputs and the best reconstruction attack's "
        "output (per run the highest SSIM over reconstruction attacks); the label leak of the "
        "best label attack: max(AUC, 1 − AUC) (an attacker can flip a guess that names the "
        "classes the wrong way round) at the worst training epoch, the one an attacker who "
        "records every epoch could pick (`leak_max`); dCor between test inputs and cut "
        "activations.",
        "**Pareto-optimal**: no other setting has accuracy ≥ and leakage ≤ with one strict.",
        f"**Thresholds.** SSIM < {S.SSIM_THRESHOLD}: unrecognisable (He et al., ACSAC 2019); "
        f"label leak ≤ {S.LABEL_AUC_THRESHOLD}: close to chance 0.5 (Li et al., ICLR 2022).",
        "**Baseline.** Each reconstruction attack also scores a data-free guess (the mean "
        "auxiliary image for every victim): its SSIM (`baseline_ssim` in results.csv) is what "
        "an attacker gets without looking at the cut. On small images it can exceed the 0.3 "
        "threshold (about 0.33 on 8x8 digits), so there 'SSIM < 0.3' asks for reconstructions "
        "worse than a blind guess.",
        _SCORE,
    ]),
]  # fmt: skip


def write_report(sweeps: Sequence[str | Path], out: str | Path, *, title: str = TITLE) -> Path:
    """Write report.md, report.html, report.json and figures/ for ``sweeps`` into ``out``.

    The sweeps are read first. ``out`` must be new, empty, or a report folder nopeek wrote (a
    file, a link or another folder is refused, see :mod:`nopeek.rundir`); the report is written
    into a hidden staging folder and moved in only once complete, so a failure leaves the old
    report as it was. Anything else in ``out`` (the default sweeps in ``out/sweeps``) is kept.
    """
    out = Path(out)
    loaded = [(s, load_spec(s), summarize(read_results(s))) for s in map(Path, sweeps)]
    with (
        RunDir(out, "report").writing(reuse=True) as folder,
        staged_entries(folder, REPORT_ENTRIES) as staging,
    ):
        _render(loaded, staging, title)
    return out / "report.md"


def _render(loaded: list[tuple[Path, SweepSpec, list[SettingSummary]]], out: Path, title: str):
    """The report files of the ``(sweep, spec, summaries)`` in ``loaded``, written into ``out``."""
    blocks: list[Block] = [("h1", title)]
    sections = []
    names: set[str] = set()
    for sweep, spec, summaries in loaded:
        name = re.sub(r"[^A-Za-z0-9_-]", "-", sweep.name) or "sweep"
        name = name if name not in names else f"{name}-{len(names)}"
        names.add(name)
        section, data = sweep_section(sweep, spec, summaries, out, name)
        blocks += section
        sections.append(data)
    blocks += METHOD
    atomic_write_bytes(out / "report.md", to_markdown(blocks).encode())
    atomic_write_bytes(out / "report.html", to_html(blocks, root=out, title=title).encode())
    atomic_write_json(out / "report.json", {"sections": sections})
