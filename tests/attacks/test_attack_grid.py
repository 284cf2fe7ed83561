"""The attack's reconstruction picture: per-image SSIM numbers and row labels legible at 100 %."""

import pytest
import torch

from nopeek.attacks import plots

MIN_TEXT_PX = 12  # about 9 pt at 96 dpi


@pytest.mark.parametrize("n", [3, 12])
def test_grid_text_is_legible_at_the_saved_dpi(n):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=gen)
    fig = plots.reconstruction_grid(x, x, ssim=torch.rand(n, generator=gen), data_range=1.0,
                                    title="white-box at conv2")  # fmt: skip
    texts = [ax.title for ax in fig.axes if ax.get_title()]
    texts += [ax.yaxis.label for ax in fig.axes if ax.get_ylabel()]
    texts.append(fig._suptitle)
    assert len(texts) == n + 3  # n SSIM numbers, two row labels, the title
    for text in texts:
        px = text.get_fontsize() * plots.DPI / 72
        assert px >= MIN_TEXT_PX, (text.get_text(), px)
    # twelve images still fit a report page without being scaled down
    assert fig.get_figwidth() * plots.DPI <= 1100


def test_ssim_numbers_do_not_overlap():
    n = 12
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    fig = plots.reconstruction_grid(x, x, ssim=torch.full((n,), 0.123), data_range=1.0,
                                    title="t")  # fmt: skip
    fig.draw_without_rendering()
    boxes = sorted((ax.title.get_window_extent() for ax in fig.axes if ax.get_title()),
                   key=lambda b: b.x0)  # fmt: skip
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:]))
