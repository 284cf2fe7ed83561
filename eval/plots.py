"""Figures of a sweep: frontier, leakage curves, reconstructions.

Figures are plain :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas, never
through ``pyplot``: importing this module changes no global backend (a notebook keeps its inline
plots). Every figure is rendered to memory and written atomically as a PNG.

``draw_*`` build a figure (what the tests measure); ``*_figure`` draw and save it. Layout is
constrained (the overall title gets its own row, never over a panel's title); error bars are
clipped to each metric's valid range (:data:`RANGES`); point labels are placed so that they do
not overlap (:func:`nopeek.eval._labels.place_labels`).
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from nopeek.eval._labels import place_labels
from nopeek.eval.frontier import frontier_order, pareto_mask
from nopeek.eval.score import LABEL_AUC_THRESHOLD, SSIM_THRESHOLD
from nopeek.eval.series import Series
from nopeek.eval.summary import SettingSummary, Stat
from nopeek.io import atomic_write_bytes
from nopeek.rundir import RunDir

DPI = 110  # every figure is saved at this resolution
FONT = 10  # points: the smallest text of a figure (about 15 px at DPI)

# (attribute of SettingSummary, axis label, threshold from the literature or None)
LEAKAGE = [
    ("best_ssim", "SSIM of the best reconstruction (lower = more private)", SSIM_THRESHOLD),
    ("label_auc", "label leak max(AUC, 1 - AUC), worst epoch", LABEL_AUC_THRESHOLD),
    ("dcor", "dCor(input, cut activation)", None),
]
# the values each metric can take: error bars and axes stay inside (the folded leak is >= 0.5)
RANGES = {"accuracy": (0.0, 1.0), "best_ssim": (0.0, 1.0), "label_auc": (0.5, 1.0),
          "dcor": (0.0, 1.0), "leakage": (0.0, 1.0)}  # fmt: skip


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def available(summaries: list[SettingSummary]) -> list[tuple[str, str, float | None]]:
    """The leakage metrics every setting of the sweep has."""
    return [m for m in LEAKAGE if all(getattr(s, m[0]) is not None for s in summaries)]


def clipped_err(stats: list[Stat], attr: str) -> np.ndarray:
    """Asymmetric error bars (2, N): mean ± std, each end clipped to ``attr``'s valid range.

    >>> clipped_err([Stat(0.95, 0.18, 2)], "accuracy").round(2).tolist()
    [[0.18], [0.05]]
    """
    lo, hi = RANGES.get(attr, (-np.inf, np.inf))
    mean = np.array([st.mean for st in stats], dtype=float)
    std = np.array([st.std or 0.0 for st in stats], dtype=float)
    low = np.maximum(mean - std, np.minimum(lo, mean))  # a mean outside the range keeps its dot
    high = np.minimum(mean + std, np.maximum(hi, mean))
    return np.stack([mean - low, high - mean])


def _keep_in_range(ax: Axes, attr: str, axis: str) -> None:
    """Cut the autoscaled limits of ``axis`` ('x' or 'y') to ``attr``'s range plus a margin."""
    if attr not in RANGES:
        return
    lo, hi = RANGES[attr]
    margin = 0.03 * (hi - lo)
    get, put = (ax.get_xlim, ax.set_xlim) if axis == "x" else (ax.get_ylim, ax.set_ylim)
    now = get()
    put(max(now[0], lo - margin), min(now[1], hi + margin))


def _frontier_panel(ax: Axes, summaries: list[SettingSummary], metric: tuple) -> None:
    """One panel of the frontier: accuracy against one leakage metric."""
    attr, label, threshold = metric
    acc = [s.accuracy.mean for s in summaries]
    stats = [getattr(s, attr) for s in summaries]
    leak = [st.mean for st in stats]
    xerr, yerr = clipped_err(stats, attr), clipped_err([s.accuracy for s in summaries], "accuracy")
    for i, on in enumerate(pareto_mask(acc, leak)):
        ax.errorbar(leak[i], acc[i], xerr=xerr[:, i : i + 1], yerr=yerr[:, i : i + 1], fmt="o",
                    color="tab:red" if on else "0.55", mfc="tab:red" if on else "white",
                    capsize=2, zorder=3 if on else 2)  # fmt: skip
    order = frontier_order(acc, leak)
    ax.step([leak[i] for i in order], [acc[i] for i in order], where="post", color="tab:red",
            alpha=0.5, label="Pareto frontier")  # fmt: skip
    if threshold is not None:
        ax.axvline(threshold, ls="--", color="tab:blue", lw=1, label=f"threshold {threshold}")
    ax.set_xlabel(label)
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=FONT - 1, loc="lower right")
    ax.grid(alpha=0.3)
    _keep_in_range(ax, attr, "x")
    _keep_in_range(ax, "accuracy", "y")


def draw_frontier(summaries: list[SettingSummary]) -> Figure | None:
    """Accuracy vs each leakage metric, mean ± std over seeds, Pareto-optimal points in red.

    Points are numbered 1..N in sweep order (the ``#`` column of the report's settings table).
    """
    metrics = available(summaries)
    if not metrics:
        return None
    fig = Figure(figsize=(5.4 * len(metrics), 4.6), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        _frontier_panel(ax, summaries, metric)
    fig.suptitle("Privacy-utility frontier (mean ± std over seeds; red = Pareto-optimal; "
                 "numbers = settings table)")  # fmt: skip
    numbers = [str(i) for i in range(1, len(summaries) + 1)]
    for ax, (attr, _, _) in zip(axes, metrics):
        xy = [(getattr(s, attr).mean, s.accuracy.mean) for s in summaries]
        place_labels(ax, xy, numbers, fontsize=FONT - 1)
    return fig


def frontier_figure(summaries: list[SettingSummary], path: str | Path) -> Path | None:
    """:func:`draw_frontier`, saved as PNG to ``path`` (None when there is nothing to draw)."""
    fig = draw_frontier(summaries)
    return None if fig is None else save(fig, path)


def draw_curves(series: Series) -> Figure:
    """Accuracy and each leakage metric against the series' knob (mean ± std over seeds)."""
    pts = [s for _, s in series.points]
    xs = [x for x, _ in series.points]
    panels = [("accuracy", "test accuracy", None)] + available(pts)
    fig = Figure(figsize=(4.4 * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (attr, label, threshold) in zip(axes, panels):
        stats = [getattr(s, attr) for s in pts]
        ax.errorbar(xs, [st.mean for st in stats], yerr=clipped_err(stats, attr), marker="o",
                    capsize=2)  # fmt: skip
        if threshold is not None:
            ax.axhline(threshold, ls="--", color="tab:blue", lw=1)
        ax.set_xlabel(series.knob)
        ax.set_title(textwrap.fill(label, 34), fontsize=FONT)
        ax.grid(alpha=0.3)
        _keep_in_range(ax, attr, "y")
    fig.suptitle(f"{series.title}: accuracy and leakage vs {series.knob}")
    return fig


def curves_figure(series: Series, path: str | Path) -> Path:
    """:func:`draw_curves`, saved as PNG to ``path``."""
    return save(draw_curves(series), path)


def _grid_rows(summaries, sweep_dir, attack) -> list[tuple[SettingSummary, np.ndarray]]:
    """(setting, the attack's picture of its first seed) for each setting that has one."""
    rows = []
    for s in summaries:
        png = Path(sweep_dir) / s.runs[0].run / RunDir.ATTACKS / f"{attack}.png"
        if png.is_file():
            rows.append((s, mpimg.imread(png)))
    return rows


def draw_reconstructions(
    summaries: list[SettingSummary], sweep_dir: str | Path, attack: str
) -> Figure | None:
    """One row per setting: the attack's original-over-reconstruction picture of the first seed.

    Each picture is placed at its own pixel size at :data:`DPI` (one image pixel per saved
    pixel), so its SSIM numbers and row labels keep the size the attack drew them at.
    """
    rows = _grid_rows(summaries, sweep_dir, attack)
    if not rows:
        return None
    title_px = 2.2 * FONT * DPI / 72  # a line of title text with its spacing
    width = max(img.shape[1] for _, img in rows)
    height = sum(img.shape[0] + title_px for _, img in rows)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    top = height
    for s, img in rows:
        top -= title_px + img.shape[0]
        ax = fig.add_axes((0, top / height, img.shape[1] / width, img.shape[0] / height))
        ax.imshow(img, interpolation="nearest")
        ax.set_axis_off()
        ssim = s.attacks.get(attack)
        extra = f" (mean SSIM over seeds {ssim.fmt()})" if ssim is not None else ""
        ax.set_title(f"{s.label}{extra}", fontsize=FONT, loc="left")
    return fig


def reconstruction_grid(
    summaries: list[SettingSummary], sweep_dir: str | Path, attack: str, path: str | Path
) -> Path | None:
    """:func:`draw_reconstructions`, saved as PNG to ``path`` (None without pictures)."""
    fig = draw_reconstructions(summaries, sweep_dir, attack)
    return None if fig is None else save(fig, path)
