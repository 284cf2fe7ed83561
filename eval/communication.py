"""The privacy-utility-communication frontier of a sweep with compressors at the cut.

Each setting is a point of three objectives: the strongest attack's ``leak`` (lower is better),
the test accuracy (higher) and the bytes a training sample costs on the wire in an epoch, both
directions (lower; :attr:`~nopeek.eval.summary.SettingSummary.bytes_per_sample`, from the wire
log: compressed payloads where the setting compresses). A setting is on the frontier when no
other is at least as good on all three and better on one (:func:`nopeek.eval.frontier.pareto_mask`).

A compressor *also acts as a defense* when its setting leaks less than the same setting without
compression (same alpha, same defenses): its mean leak is lower by more than :func:`margin`,
the larger of the two settings' seed standard deviations and :data:`MIN_MARGIN` (a leak
difference of 0.02, a tenth of the report card's threshold, is within what an attacker's own
seed moves on these data), so a difference within the seeds' spread is not counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from nopeek.eval._labels import place_labels
from nopeek.eval.frontier import pareto_mask
from nopeek.eval.plots import FONT, RANGES, clipped_err, save
from nopeek.eval.render import Block
from nopeek.eval.summary import SettingSummary, Stat

MIN_MARGIN = 0.02


def plotted(summaries: list[SettingSummary]) -> list[int]:
    """Indices of the settings with all three objectives (leak, accuracy, bytes)."""
    return [i for i, s in enumerate(summaries) if s.leakage is not None and s.bytes_per_sample]


def uncompressed_twin(s: SettingSummary, summaries: list[SettingSummary]) -> SettingSummary | None:
    """The setting of ``summaries`` that is ``s`` without its compressors (None if not swept)."""
    return next(
        (
            t
            for t in summaries
            if not t.compress and t.alpha == s.alpha and t.defenses == s.defenses
        ),
        None,
    )


def margin(s: SettingSummary, twin: SettingSummary) -> float:
    """How much lower ``s``'s mean leak must be than ``twin``'s to count: the larger seed std
    of the two, at least :data:`MIN_MARGIN`."""
    return max(s.leakage.std or 0.0, twin.leakage.std or 0.0, MIN_MARGIN)


def acts_as_defense(s: SettingSummary, summaries: list[SettingSummary]) -> bool | None:
    """Whether ``s``'s compressors lower the strongest leak by more than :func:`margin` (None
    when ``s`` compresses nothing, or its uncompressed twin or a leak is missing).

    >>> from nopeek.eval.summary import Stat
    >>> def at(compress, leak, std=None):
    ...     return SettingSummary("s", "l", 0.0, "", [], Stat(0.9, None, 1), None, {}, None,
    ...                           None, Stat(leak, std, 2), compress=compress)
    >>> ref = at("", 0.5, 0.03)
    >>> acts_as_defense(at("forward=int4", 0.4), [ref]), acts_as_defense(at("fp16", 0.48), [ref])
    (True, False)
    """
    twin = uncompressed_twin(s, summaries) if s.compress else None
    if twin is None or s.leakage is None or twin.leakage is None:
        return None
    return s.leakage.mean < twin.leakage.mean - margin(s, twin)


def frontier(summaries: list[SettingSummary]) -> list[bool]:
    """Pareto membership (per setting) over leak, accuracy and bytes per sample; False for a
    setting lacking one of them."""
    idx = plotted(summaries)
    out = [False] * len(summaries)
    if not idx:
        return out
    acc = [summaries[i].accuracy.mean for i in idx]
    costs = [[summaries[i].leakage.mean, summaries[i].bytes_per_sample.mean] for i in idx]
    for i, on in zip(idx, pareto_mask(acc, costs)):
        out[i] = bool(on)
    return out


def _fmt(stat: Stat | None, digits: int = 3) -> str:
    return "—" if stat is None else stat.fmt(digits)


def _per_epoch(s: SettingSummary, key: str) -> str:
    values = [r.metrics.get(key) for r in s.runs if r.metrics.get(key) is not None]
    return "—" if not values else f"{float(np.mean(values)):,.0f}"


def table(summaries: list[SettingSummary]) -> Block:
    """One row per setting: bytes per epoch each way, bytes per sample and the saving against
    the uncompressed twin, accuracy, the strongest leak, frontier membership and the verdict."""
    on = frontier(summaries)
    header = ["#", "setting", "bytes/epoch →server", "bytes/epoch →client", "bytes/sample",
              "× fewer", "accuracy", "strongest leak", "frontier", "acts as a defense"]  # fmt: skip
    rows = []
    for i, s in enumerate(summaries):
        twin = uncompressed_twin(s, summaries)
        fewer = "—"
        if twin is not None and s.bytes_per_sample and twin.bytes_per_sample:
            fewer = f"{twin.bytes_per_sample.mean / s.bytes_per_sample.mean:.1f}"
        verdict = acts_as_defense(s, summaries)
        word = {True: "yes", False: "no", None: "—"}[verdict]
        if verdict is not None:
            word += f" ({s.leakage.mean:.3f} vs {twin.leakage.mean:.3f} uncompressed)"
        bps = s.bytes_per_sample
        rows.append([str(i + 1), s.label, _per_epoch(s, "bytes_client_to_server"),
                     _per_epoch(s, "bytes_server_to_client"),
                     "—" if bps is None else f"{bps.mean:,.0f}", fewer, _fmt(s.accuracy),
                     _fmt(s.leakage), "yes" if on[i] else "—", word])  # fmt: skip
    return ("table", header, rows)


def sentences(summaries: list[SettingSummary]) -> list[str]:
    """One sentence per compressed setting: whether its compressors also act as a defense."""
    out = []
    for s in summaries:
        verdict = acts_as_defense(s, summaries)
        if verdict is None:
            continue
        twin = uncompressed_twin(s, summaries)
        change = f"strongest leak {s.leakage.mean:.3f} against {twin.leakage.mean:.3f} uncompressed"
        if verdict:
            out.append(f"**{s.compress}** also acts as a defense: {change}.")
        else:
            within = f"not lower by more than {margin(s, twin):.3f}"
            out.append(f"**{s.compress}** is no defense: {change}, {within}.")
    return out


def _panel(ax: Axes, summaries, idx, on, y_attr: str, colour_attr: str, cmap: str, fig) -> None:
    """One panel: ``y_attr`` (mean ± std over seeds) against bytes per sample, coloured by
    ``colour_attr`` over the range the plotted settings span."""
    pts = [summaries[i] for i in idx]
    x = np.array([s.bytes_per_sample.mean for s in pts])
    y = np.array([getattr(s, y_attr).mean for s in pts])
    c = np.array([getattr(s, colour_attr).mean for s in pts])
    err = clipped_err([getattr(s, y_attr) for s in pts], y_attr)
    ax.errorbar(x, y, yerr=err, fmt="none", ecolor="0.6", capsize=2, zorder=2)
    lo, hi = (c.min(), c.max()) if c.max() > c.min() else RANGES[colour_attr]
    compressed = np.array([bool(s.compress) for s in pts])
    edge = np.array(["tab:red" if on[i] else "0.3" for i in idx])
    width = np.array([2.0 if on[i] else 0.8 for i in idx])
    for mask, marker in ((~compressed, "s"), (compressed, "o")):
        if mask.any():
            points = ax.scatter(x[mask], y[mask], c=c[mask], cmap=cmap, vmin=lo, vmax=hi,
                                marker=marker, s=60, zorder=3, edgecolors=edge[mask],
                                linewidths=width[mask])  # fmt: skip
    names = {"leakage": "strongest leak", "accuracy": "test accuracy"}
    fig.colorbar(points, ax=ax, label=names[colour_attr] + " (mean)", shrink=0.85)
    ax.set_xscale("log")
    ax.set_xlabel("bytes per training sample and epoch, both directions (log)")
    ax.set_ylabel(names[y_attr] + " (mean ± std over seeds)")
    ax.grid(alpha=0.3, which="both")
    low, high = RANGES[y_attr]
    pad = 0.1 * max(float(y.max() - y.min()), 0.05)
    margin = 0.02 * (high - low)
    ax.set_ylim(max(y.min() - pad, low - margin), min(y.max() + pad, high + margin))


def draw(summaries: list[SettingSummary]) -> Figure | None:
    """Leak against bytes per sample coloured by accuracy, and accuracy against bytes per
    sample coloured by the leak; squares uncompressed, circles compressed, red edges on the
    frontier; points numbered as the table's ``#`` column."""
    idx = plotted(summaries)
    if len(idx) < 2:
        return None
    on = frontier(summaries)
    fig = Figure(figsize=(11.5, 4.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    _panel(left, summaries, idx, on, "leakage", "accuracy", "viridis", fig)
    _panel(right, summaries, idx, on, "accuracy", "leakage", "magma_r", fig)
    fig.suptitle("Privacy-utility-communication frontier (means over seeds; squares "
                 "uncompressed, red edge = Pareto-optimal over leak, accuracy, bytes)",
                 fontsize=FONT + 1)  # fmt: skip
    numbers = [str(i + 1) for i in idx]
    for ax, attr in ((left, "leakage"), (right, "accuracy")):
        xy = [(summaries[i].bytes_per_sample.mean, getattr(summaries[i], attr).mean) for i in idx]
        place_labels(ax, xy, numbers, fontsize=FONT - 1)
    return fig


def figure(summaries: list[SettingSummary], path: str | Path) -> Path | None:
    """:func:`draw`, saved as PNG to ``path`` (None when fewer than two settings have all three
    objectives)."""
    fig = draw(summaries)
    return None if fig is None else save(fig, path)


def section(summaries: list[SettingSummary], out: Path, name: str) -> list[Block]:
    """The report's blocks for the compressors of one sweep (none when nothing compresses)."""
    if not any(s.compress for s in summaries):
        return []
    blocks: list[Block] = [("h3", "Privacy-utility-communication frontier")]
    fig = figure(summaries, out / "figures" / f"{name}-communication.png")
    if fig is not None:
        blocks.append(("img", f"figures/{fig.name}", "leak and accuracy against bytes"))
    blocks.append(("p", "Bytes per epoch are what the wire log counted (a compressed message: "
                   "its payload: values and indices, or codes with their scale and zero point); "
                   "bytes/sample adds both directions and divides by the training samples; "
                   "× fewer is against the same setting uncompressed. A compressor acts as a "
                   "defense when its strongest leak is lower than the uncompressed setting's by "
                   f"more than the seeds' spread (at least {MIN_MARGIN})."))  # fmt: skip
    blocks.append(table(summaries))
    said = sentences(summaries)
    if said:
        blocks.append(("list", said))
    return blocks
