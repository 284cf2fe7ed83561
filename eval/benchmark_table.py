"""The benchmark's one table: cells of (configuration, data set, defense, attack).

Each cell holds the attack's ``leak`` and the setting's test accuracy, mean and sample std over
seeds (``leak_n`` seeds), the attack's DCS and its kind's T-DCS, and the setting's C-DCS
(:mod:`nopeek.eval.dcs`); or, where the attack or the defense does not apply, ``status`` "n/a"
and the ``reason``. On a vertical run an attack's leak per seed is the worst over the clients it
attacks. Written as ``table.csv`` (one row per cell), ``table.json`` (the same records),
``table.md`` (one row per configuration x data set x defense, a column per attack, the reasons
as numbered notes) and ``heatmap.png``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from nopeek.eval.results import make_rows
from nopeek.eval.settings import parse_attack
from nopeek.eval.summary import SettingSummary, Stat, summarize
from nopeek.eval.sweep import run_dir
from nopeek.io import atomic_write_bytes, atomic_write_json
from nopeek.rundir import RunDir

if TYPE_CHECKING:
    from nopeek.eval.benchmark import BenchmarkSpec, Group

COLUMNS = ["configuration", "dataset", "defense", "attack", "kind", "status", "reason"]
COLUMNS += ["leak_mean", "leak_std", "leak_n", "accuracy_mean", "accuracy_std", "accuracy_n"]
COLUMNS += ["dcs", "t_dcs", "c_dcs"]
KINDS = ("reconstruction", "label")


def _kind(name: str) -> str:
    from nopeek.eval._compat import attack_kind

    return attack_kind(name)


def _run_rows(g: Group, out: Path, refusals: dict[str, str]):
    """Result rows of every run of ``g`` (one attack = the worst leak over its targets) and the
    reasons of the attacks refused at attack time, by (setting slug, attack)."""
    from nopeek.eval._compat import attack_targets
    from nopeek.eval.benchmark import target_key

    rows, why = [], {}
    for setting, seed in g.sweep.runs():
        path = run_dir(g.out, setting, seed)
        folder = RunDir.open(path, "run")
        config = setting.config(g.sweep.base, seed=seed)
        attacks = {}
        for spec in g.attacks:
            name = parse_attack(spec)[0]
            leaks = []
            for stem, _ in attack_targets(config, name):
                key = target_key(out, path, stem)
                if key in refusals:
                    why.setdefault((setting.slug, name), refusals[key])
                elif folder.has_attack(stem):
                    leak = folder.attack_result(stem).get("leak")
                    leaks += [] if leak is None else [float(leak)]
            if leaks:
                attacks[name] = {"kind": _kind(name), "leak": max(leaks)}
        base = {"setting": setting.slug, "label": setting.label, "run": path.name,
                "alpha": setting.alpha, "defenses": "+".join(setting.defenses),
                "seed": seed}  # fmt: skip
        rows += make_rows(base, folder.metrics(), attacks)
    return rows, why


def _stat(st: Stat | None, prefix: str) -> dict[str, Any]:
    if st is None:
        return {f"{prefix}_mean": None, f"{prefix}_std": None, f"{prefix}_n": 0}
    return {f"{prefix}_mean": st.mean, f"{prefix}_std": st.std, f"{prefix}_n": st.n}


def _cell(g: Group, defense: str, name: str, **values: Any) -> dict[str, Any]:
    cell = dict.fromkeys(COLUMNS)
    cell |= {"configuration": g.configuration, "dataset": g.dataset, "defense": defense}
    return cell | {"attack": name, "kind": _kind(name)} | values


def collect(
    groups: list[Group], spec: BenchmarkSpec, out: Path, refusals: dict[str, str]
) -> list[dict[str, Any]]:
    """Every cell of the grid, in grid order (configuration, data set, defense, attack)."""
    names = [parse_attack(a)[0] for a in spec.attacks]
    cells = []
    for g in groups:
        rows, why = _run_rows(g, out, refusals) if g.sweep.settings else ([], {})
        by_slug: dict[str, SettingSummary] = {s.setting: s for s in summarize(rows)} if rows else {}
        for defense, setting in spec.settings():
            if defense in g.refused_defenses:
                reason = g.refused_defenses[defense]
                cells += [_cell(g, defense, n, status="n/a", reason=reason) for n in names]
                continue
            s = by_slug[setting.slug]
            shared = _stat(s.accuracy, "accuracy")
            shared["c_dcs"] = None if s.defense is None else s.defense.c_dcs
            for n in names:
                if n in g.refused_attacks or n not in s.attacks:
                    reason = g.refused_attacks.get(n) or why.get((setting.slug, n))
                    reason = reason or "no result (the attack's AUC is undefined)"
                    cells.append(_cell(g, defense, n, status="n/a", reason=reason, **shared))
                    continue
                dcs = t = None
                if s.defense is not None:
                    dcs, t = s.defense.dcs.get(n), s.defense.t_dcs.get(_kind(n))
                values = shared | _stat(s.attacks[n], "leak") | {"dcs": dcs, "t_dcs": t}
                cells.append(_cell(g, defense, n, status="ok", **values))
    return cells


def _fmt(mean: float | None, std: float | None, digits: int = 3) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def to_csv(cells: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for cell in cells:
        writer.writerow({k: "" if cell[k] is None else cell[k] for k in COLUMNS})
    return buf.getvalue()


def _settings(cells: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    rows: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for c in cells:
        rows.setdefault((c["configuration"], c["dataset"], c["defense"]), []).append(c)
    return rows


def to_markdown(cells: list[dict[str, Any]], spec: BenchmarkSpec) -> str:
    """One row per configuration x data set x defense; n/a cells point to numbered reasons."""
    names = [parse_attack(a)[0] for a in spec.attacks]
    kinds = [k for k in KINDS if any(c["kind"] == k for c in cells)]
    head = ["configuration", "data", "defense", "accuracy", *(f"{n} leak" for n in names)]
    head += [f"T-DCS {k}" for k in kinds] + ["C-DCS"]
    notes: dict[str, int] = {}
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (conf, data, defense), row in _settings(cells).items():
        first = row[0]
        acc = _fmt(first["accuracy_mean"], first["accuracy_std"])
        if acc == "—" and first["status"] == "n/a":
            acc = f"n/a [{notes.setdefault(first['reason'], len(notes) + 1)}]"
        out = [conf, data, defense, acc]
        for c in row:
            if c["status"] == "ok":
                out.append(_fmt(c["leak_mean"], c["leak_std"]))
            else:
                out.append(f"n/a [{notes.setdefault(c['reason'], len(notes) + 1)}]")
        t = {c["kind"]: c["t_dcs"] for c in row if c["t_dcs"] is not None}
        out += [_fmt(t.get(k), None) for k in kinds] + [_fmt(first["c_dcs"], None)]
        lines.append("| " + " | ".join(out) + " |")
    lines.append("")
    lines += [f"[{k}] {reason}" for reason, k in notes.items()]
    return "\n".join(lines) + "\n"


def _nan(value: float | None) -> float:
    return np.nan if value is None else float(value)


def _ink(value: float) -> str:
    """Text colour readable on a cell of ``value`` in [0, 1] (dark cells: white)."""
    return "white" if not np.isnan(value) and value > 0.6 else "black"


def draw_heatmap(cells: list[dict[str, Any]], spec: BenchmarkSpec) -> Figure:
    """Leak per cell (mean, ± std over seeds; grey: n/a), beside accuracy and C-DCS."""
    names = [parse_attack(a)[0] for a in spec.attacks]
    rows = _settings(cells)
    labels = [f"{c} | {d} | {f}" for c, d, f in rows]
    leak = np.full((len(rows), len(names)), np.nan)
    side = np.full((len(rows), 2), np.nan)
    for i, row in enumerate(rows.values()):
        for j, c in enumerate(row):
            leak[i, j] = _nan(c["leak_mean"])
        side[i] = [_nan(row[0]["accuracy_mean"]), _nan(row[0]["c_dcs"])]
    fig = Figure(figsize=(2.2 + 1.15 * (len(names) + 2), 0.9 + 0.42 * len(rows)))
    fig.set_layout_engine("constrained")
    ax, ax2 = fig.subplots(1, 2, width_ratios=[len(names), 2])
    for axis, data, cmap, cols in ((ax, leak, "Reds", names), (ax2, side, "Greens",
                                                               ["accuracy", "C-DCS"])):  # fmt: skip
        shown = np.ma.masked_invalid(data)
        colours = colormaps[cmap].with_extremes(bad="#d9d9d9")  # grey: n/a
        axis.imshow(shown, cmap=colours, vmin=0, vmax=1, aspect="auto")
        axis.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=9)
        axis.set_yticks(range(len(labels)), labels if axis is ax else [], fontsize=9)
    for i, row in enumerate(rows.values()):
        for j, c in enumerate(row):
            text = "n/a" if c["status"] != "ok" else _fmt(c["leak_mean"], c["leak_std"], 2)
            ax.text(j, i, text.replace(" ± ", "\n± "), ha="center", va="center", fontsize=7,
                    color=_ink(leak[i, j]))  # fmt: skip
        for j, v in enumerate(side[i]):
            ax2.text(j, i, "—" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                     fontsize=7, color=_ink(v))  # fmt: skip
    ax.set_title("leak (0 = blind guess, 1 = exact)", fontsize=10)
    ax2.set_title("accuracy, C-DCS", fontsize=10)
    return fig


def write_table(cells: list[dict[str, Any]], out: Path, spec: BenchmarkSpec) -> None:
    """``table.csv``, ``table.json``, ``table.md`` and ``heatmap.png`` in ``out``."""
    from nopeek.eval.plots import save

    atomic_write_bytes(out / "table.csv", to_csv(cells).encode())
    atomic_write_json(out / "table.json", cells)
    atomic_write_bytes(out / "table.md", to_markdown(cells, spec).encode())
    save(draw_heatmap(cells, spec), out / "heatmap.png")
