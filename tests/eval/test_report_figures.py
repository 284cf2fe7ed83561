"""The report's figures, measured on the matplotlib objects: no title drawn over another, error
bars inside each metric's range, point labels that do not overlap, legible reconstruction grids.
"""

import itertools

import numpy as np
import pytest
import torch

from nopeek.attacks.plots import save_reconstruction_grid
from nopeek.eval import plots
from nopeek.eval.series import Series
from nopeek.eval.summary import RunSummary, SettingSummary, Stat

MIN_TEXT_PX = 12  # about 9 pt at 96 dpi: legible at 100 % zoom


def _summary(i, acc, ssim, dcor, *, run="runs/a"):
    """A setting with accuracy, best SSIM and dCor stats ``(mean, std)``."""
    runs = [RunSummary(f"s{i}", f"setting {i}", 0, run, {}, {})]
    return SettingSummary(
        setting=f"s{i}", label=f"alpha={i}", alpha=float(i), defenses="", runs=runs,
        accuracy=Stat(*acc, 2), dcor=Stat(*dcor, 2), attacks={"w": Stat(*ssim, 2)},
        best_ssim=Stat(*ssim, 2), label_auc=None, leakage=None,
    )  # fmt: skip


def _wide_spread(n=5):
    """Means near the ends of [0, 1] with standard deviations that reach past them."""
    return [
        _summary(i, (0.95 - 0.2 * i, 0.18), (0.04 + 0.2 * i, 0.3), (0.97 - 0.1 * i, 0.1))
        for i in range(n)
    ]


def _crowded(n=8):
    """Settings whose means nearly coincide: labels at one fixed offset would overlap."""
    return [
        _summary(i, (0.9 + 1e-4 * i, 0.01), (0.5 + 1e-4 * i, 0.01), (0.8, 0.01)) for i in range(n)
    ]


def _boxes_overlap(a, b):
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _drawn(fig):
    fig.draw_without_rendering()
    return fig


def _error_segments(ax):
    """Every error bar's segment end points, as an (M, 2) array of (x, y)."""
    ends = [
        np.asarray(seg).reshape(-1, 2)
        for container in ax.containers
        for collection in container.lines[2]
        for seg in collection.get_segments()
    ]
    return np.concatenate(ends)


def test_suptitle_clears_every_panel_title():
    series = Series("NoPeek", "alpha", [(float(i), s) for i, s in enumerate(_wide_spread())])
    fig = _drawn(plots.draw_curves(series))
    top = fig._suptitle.get_window_extent()
    titles = [ax.title.get_window_extent() for ax in fig.axes]
    assert len(titles) == 3
    for box in titles:
        assert not _boxes_overlap(top, box)
    for a, b in itertools.combinations(titles, 2):  # long panel titles wrap instead
        assert not _boxes_overlap(a, b)
    for ax in fig.axes:  # and the title clears the plotting area
        assert not _boxes_overlap(top, ax.get_window_extent())


def test_frontier_suptitle_clears_the_panels():
    fig = _drawn(plots.draw_frontier(_wide_spread()))
    top = fig._suptitle.get_window_extent()
    for ax in fig.axes:
        assert not _boxes_overlap(top, ax.get_tightbbox())


def test_curve_error_bars_stay_in_range():
    series = Series("NoPeek", "alpha", [(float(i), s) for i, s in enumerate(_wide_spread())])
    fig = _drawn(plots.draw_curves(series))
    for ax in fig.axes:  # accuracy, SSIM, dCor: all in [0, 1]
        y = _error_segments(ax)[:, 1]
        assert y.min() >= 0.0 and y.max() <= 1.0, (y.min(), y.max())
        lo, hi = ax.get_ylim()
        assert lo >= -0.05 and hi <= 1.05, (lo, hi)
    # the clipped bars still reach the range's end on the clipped side
    acc = _error_segments(fig.axes[0])[:, 1]
    assert acc.max() == pytest.approx(1.0)


def test_frontier_error_bars_stay_in_range():
    fig = _drawn(plots.draw_frontier(_wide_spread()))
    for ax in fig.axes:
        xy = _error_segments(ax)
        assert xy.min() >= 0.0 and xy.max() <= 1.0
        assert ax.get_ylim()[0] >= -0.05 and ax.get_ylim()[1] <= 1.05
        assert ax.get_xlim()[0] >= -0.05 and ax.get_xlim()[1] <= 1.05


def test_clipped_err_is_asymmetric_and_keeps_the_mean():
    err = plots.clipped_err([Stat(0.95, 0.18, 2), Stat(0.02, 0.1, 2), Stat(0.5, None, 1)], "dcor")
    assert err[:, 0] == pytest.approx([0.18, 0.05])
    assert err[:, 1] == pytest.approx([0.02, 0.1])
    assert err[:, 2].tolist() == [0.0, 0.0]
    leak = plots.clipped_err([Stat(0.55, 0.2, 2)], "label_auc")  # the folded leak is >= 0.5
    assert leak[:, 0] == pytest.approx([0.05, 0.2])


def test_point_labels_do_not_overlap():
    summaries = _crowded()
    fig = _drawn(plots.draw_frontier(summaries))
    for ax in fig.axes:
        labels = [t for t in ax.texts if t.get_text().isdigit()]
        assert sorted(t.get_text() for t in labels) == sorted(
            str(i) for i in range(1, len(summaries) + 1)
        )
        boxes = [t.get_window_extent() for t in labels]
        for a, b in itertools.combinations(boxes, 2):
            assert not _boxes_overlap(a, b)
        frame = ax.get_window_extent()
        for box in boxes:  # and every label stays inside its panel
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1
            assert frame.y0 <= box.y0 and box.y1 <= frame.y1


def test_label_boxes_survive_saving(tmp_path):
    """The layout is frozen after placement: saving moves no label onto another."""
    fig = plots.draw_frontier(_crowded())
    plots.save(fig, tmp_path / "f.png")
    for ax in fig.axes:
        boxes = [t.get_window_extent() for t in ax.texts if t.get_text().isdigit()]
        for a, b in itertools.combinations(boxes, 2):
            assert not _boxes_overlap(a, b)


def _attack_picture(sweep, run, n=12):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=gen)
    path = sweep / run / "attacks" / "w.png"
    path.parent.mkdir(parents=True)
    save_reconstruction_grid(path, x, x.flip(0), data_range=1.0, title="w at conv2")


def test_reconstruction_grid_keeps_the_attack_pictures_full_size(tmp_path):
    summaries = [_summary(i, (0.9, 0.01), (0.5, 0.1), (0.8, 0.01), run=f"runs/{i}")
                 for i in range(3)]  # fmt: skip
    for s in summaries:
        _attack_picture(tmp_path, s.runs[0].run)
    fig = plots.draw_reconstructions(summaries, tmp_path, "w")
    fig.set_dpi(plots.DPI)  # the resolution it is saved at
    fig.draw_without_rendering()
    assert len(fig.axes) == 3
    for ax in fig.axes:
        width_px = ax.get_images()[0].get_array().shape[1]
        # one picture pixel per saved pixel: the attack's text keeps its size
        assert ax.get_window_extent().width >= width_px - 0.5
        assert ax.title.get_fontsize() * plots.DPI / 72 >= MIN_TEXT_PX
    titles = [ax.title.get_window_extent() for ax in fig.axes]
    images = [ax.get_window_extent() for ax in fig.axes]
    for title, image in itertools.product(titles, images):
        assert not _boxes_overlap(title, image)
