"""Figures of a sweep: frontier, leakage curves, reconstructions.

Figures are plain :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas, never
through ``pyplot``: importing this module changes no global backend (a notebook keeps its inline
plots). Every figure is rendered to memory and written atomically as a PNG.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.image as mpimg
from matplotlib.figure import Figure

from nopeek.eval.frontier import frontier_order, pareto_mask
from nopeek.eval.score import LABEL_AUC_THRESHOLD, SSIM_THRESHOLD
from nopeek.eval.series import Series
from nopeek.eval.summary import SettingSummary, Stat
from nopeek.io import atomic_write_bytes
from nopeek.rundir import RunDir

# (attribute of SettingSummary, axis label, threshold from the literature or None)
LEAKAGE = [
    ("best_ssim", "SSIM of the best reconstruction (lower = more private)", SSIM_THRESHOLD),
    ("label_auc", "label leak max(AUC, 1 - AUC), worst epoch", LABEL_AUC_THRESHOLD),
    ("dcor", "dCor(input, cut activation)", None),
]


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def available(summaries: list[SettingSummary]) -> list[tuple[str, str, float | None]]:
    """The leakage metrics every setting of the sweep has."""
    return [m for m in LEAKAGE if all(getattr(s, m[0]) is not None for s in summaries)]


def _err(stat: Stat) -> float:
    return stat.std if stat.std is not None else 0.0


def frontier_figure(summaries: list[SettingSummary], path: str | Path) -> Path | None:
    """Accuracy vs each leakage metric, mean ± std over seeds, Pareto-optimal points in red.

    Points are numbered 1..N in sweep order (the ``#`` column of the report's settings table).
    """
    metrics = available(summaries)
    if not metrics:
        return None
    fig = Figure(figsize=(5.2 * len(metrics), 4.2))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    acc = [s.accuracy.mean for s in summaries]
    for ax, (attr, label, threshold) in zip(axes[0], metrics):
        leak = [getattr(s, attr).mean for s in summaries]
        mask = pareto_mask(acc, leak)
        for number, (s, on) in enumerate(zip(summaries, mask), start=1):
            st = getattr(s, attr)
            ax.errorbar(
                st.mean,
                s.accuracy.mean,
                xerr=_err(st),
                yerr=_err(s.accuracy),
                fmt="o",
                color="tab:red" if on else "0.55",
                mfc="tab:red" if on else "white",
                capsize=2,
                zorder=3 if on else 2,
            )
            ax.annotate(str(number), (st.mean, s.accuracy.mean), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
        order = frontier_order(acc, leak)
        ax.step([leak[i] for i in order], [acc[i] for i in order], where="post", color="tab:red",
                alpha=0.5, label="Pareto frontier")  # fmt: skip
        if threshold is not None:
            ax.axvline(threshold, ls="--", color="tab:blue", lw=1, label=f"threshold {threshold}")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy")
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    fig.suptitle("Privacy-utility frontier (mean ± std over seeds; red = Pareto-optimal; "
                 "numbers = settings table)")  # fmt: skip
    return save(fig, path)


def curves_figure(series: Series, path: str | Path) -> Path:
    """Accuracy and each leakage metric against the series' knob (mean ± std over seeds)."""
    pts = [s for _, s in series.points]
    xs = [x for x, _ in series.points]
    panels = [("accuracy", "test accuracy", None)] + available(pts)
    fig = Figure(figsize=(4.2 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (attr, label, threshold) in zip(axes[0], panels):
        stats = [getattr(s, attr) for s in pts]
        ax.errorbar(xs, [st.mean for st in stats], yerr=[_err(st) for st in stats], marker="o",
                    capsize=2)  # fmt: skip
        if threshold is not None:
            ax.axhline(threshold, ls="--", color="tab:blue", lw=1)
        ax.set_xlabel(series.knob)
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{series.title}: accuracy and leakage vs {series.knob}")
    return save(fig, path)


def reconstruction_grid(
    summaries: list[SettingSummary], sweep_dir: str | Path, attack: str, path: str | Path
) -> Path | None:
    """One row per setting: the attack's original-over-reconstruction image of the first seed."""
    rows = []
    for s in summaries:
        png = Path(sweep_dir) / s.runs[0].run / RunDir.ATTACKS / f"{attack}.png"
        if png.is_file():
            rows.append((s, mpimg.imread(png)))
    if not rows:
        return None
    width = 8.0
    heights = [width * img.shape[0] / img.shape[1] for _, img in rows]
    fig = Figure(figsize=(width, sum(heights) + 0.4 * len(rows)))
    axes = fig.subplots(len(rows), 1, squeeze=False)
    for ax, (s, img) in zip(axes[:, 0], rows):
        ax.imshow(img)
        ax.set_axis_off()
        ssim = s.attacks.get(attack)
        extra = f" (mean SSIM over seeds {ssim.fmt()})" if ssim is not None else ""
        ax.set_title(f"{s.label}{extra}", fontsize=8, loc="left")
    fig.tight_layout()
    return save(fig, path)
