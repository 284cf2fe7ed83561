"""The attack's reconstruction picture: per-image SSIM numbers and row labels legible at 100 %."""

import pytest
import torch

from nopeek.attacks import plots

MIN_TEXT_PX = 12  # about 9 pt at 96 dpi


def _texts(fig):
    """Every text of the figure: the title, then the row labels and the SSIM numbers."""
    return [fig._suptitle, *fig.axes[0].texts]


@pytest.mark.parametrize("n", [3, 12])
def test_grid_text_is_legible_at_the_saved_dpi(n):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=gen)
    ssim = torch.rand(n, generator=gen)
    fig = plots.reconstruction_grid(x, x, ssim=ssim, data_range=1.0, title="white-box at conv2")
    texts = _texts(fig)
    assert len(texts) == n + 3  # the title, two row labels, n SSIM numbers
    assert [t.get_text() for t in texts[3:]] == [f"{float(v):.2f}" for v in ssim]
    for text in texts:
        px = text.get_fontsize() * plots.DPI / 72
        assert px >= MIN_TEXT_PX, (text.get_text(), px)
    # twelve images still fit a report page without being scaled down
    assert fig.get_figwidth() * plots.DPI <= 1100


def test_texts_stay_in_the_figure_and_do_not_overlap_each_other_or_the_pictures():
    n = 12
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    fig = plots.reconstruction_grid(x, x, ssim=torch.full((n,), 0.123), data_range=1.0,
                                    title="t")  # fmt: skip
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    frame = fig.bbox
    picture = fig.axes[0].get_images()[0].get_window_extent(renderer)
    boxes = [t.get_window_extent(renderer) for t in _texts(fig)]
    for box in boxes:
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0
        assert box.y1 <= frame.y1
        assert not box.overlaps(picture)
    numbers = sorted(boxes[3:], key=lambda b: b.x0)
    assert all(a.x1 <= b.x0 for a, b in zip(numbers, numbers[1:]))


def test_the_mosaic_holds_each_picture_on_the_fixed_scale():
    gen = torch.Generator().manual_seed(2)
    x, x_hat = torch.rand(3, 3, 4, 5, generator=gen) * 2, torch.rand(3, 3, 4, 5, generator=gen)
    mosaic = plots._mosaic(x, x_hat, data_range=2.0)
    g = max(1, round(plots.GAP * 5))
    assert tuple(mosaic.shape) == (2 * 4 + g, 3 * (5 + g) - g, 3)
    for i in range(3):
        left = i * (5 + g)
        assert torch.equal(mosaic[:4, left : left + 5], x[i].permute(1, 2, 0) / 2)
        assert torch.equal(
            mosaic[4 + g :, left : left + 5], x_hat[i].clamp(0, 2).permute(1, 2, 0) / 2
        )
    assert torch.all(mosaic[4 : 4 + g] == 1)  # the white gap between the rows
