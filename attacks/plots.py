"""A picture of a reconstruction attack: originals on top, reconstructions below, SSIM per pair."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from matplotlib.figure import Figure  # no pyplot: renders with Agg, never opens a window
from torch import Tensor

from nopeek.attacks.metrics import ssim_per_sample
from nopeek.io import atomic_write_bytes

DPI = 100  # the grid is saved at this resolution
FONT = 10  # points: SSIM numbers and row labels (about 14 px at DPI)
CELL = 0.8  # inches per image column: 12 columns fit a report page (about 1000 px)


GAP = 0.125  # of an image's width: the white space between two pictures


def _mosaic(x: Tensor, x_hat: Tensor, data_range: float) -> Tensor:
    """``x`` over ``x_hat`` (N, C, H, W) as one picture on [0, 1]: 2 rows of N images with
    white gaps, (2H + g, N(W + g) - g) for grey images, with a trailing C for colour."""
    n, c, h, w = x.shape
    g = max(1, round(GAP * w))
    out = torch.ones(c, 2 * h + g, n * (w + g) - g)
    for row, images in enumerate((x, x_hat)):
        scaled = images.detach().float().cpu().clamp(0, data_range) / data_range
        for i in range(n):
            top, left = row * (h + g), i * (w + g)
            out[:, top : top + h, left : left + w] = scaled[i]
    return out[0] if c == 1 else out.permute(1, 2, 0)


def reconstruction_grid(
    x: Tensor,
    x_hat: Tensor,
    *,
    ssim: Tensor | None,
    data_range: float,
    title: str,
    max_images: int = 12,
) -> Figure:
    """A 2-row figure: ``x`` (N, C, H, W) on top, ``x_hat`` below, for the first ``max_images``.

    ``ssim`` (N,) per-image values are written under the reconstructions. Pixel values are shown
    on the fixed scale [0, data_range], so a washed-out reconstruction looks washed out. Text is
    :data:`FONT` points, legible at 100 % zoom of the PNG saved at :data:`DPI`. The pictures are
    one image on one axes (24 axes took 0.3 s to build, twice the time of saving the PNG).

    >>> fig = reconstruction_grid(torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8),
    ...                           ssim=torch.tensor([0.5, 0.25, 1.0]), data_range=1.0, title="t")
    >>> [t.get_text() for t in fig.axes[0].texts]
    ['original', 'reconstr.', '0.50', '0.25', '1.00']
    """
    n = min(len(x), max_images)
    h, w = x.shape[-2:]
    mosaic = _mosaic(x[:n], x_hat[:n], data_range)
    width, height = max(CELL * n + 0.6, 4.5), 2.5
    fig = Figure(figsize=(width, height), dpi=DPI)
    # room for the row labels on the left, the title above and the SSIM numbers below
    ax = fig.add_axes((0.5 / width, 0.3 / height, 1 - 0.6 / width, 1 - 0.75 / height))
    ax.imshow(mosaic.numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    g = max(1, round(GAP * w))
    for row, label in enumerate(("original", "reconstr.")):
        ax.text(-g, row * (h + g) + h / 2, label, fontsize=FONT, rotation=90,
                ha="right", va="center")  # fmt: skip
    if ssim is not None:
        for i in range(n):
            ax.text(i * (w + g) + w / 2, 2 * h + g + 0.5, f"{float(ssim[i]):.2f}",
                    fontsize=FONT, ha="center", va="top")  # fmt: skip
    fig.suptitle(title, fontsize=FONT + 1)
    return fig


def save_grid(fig: Figure, path: str | Path) -> None:
    """Write ``fig`` as PNG to ``path`` atomically (temporary file, then rename)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())


def save_reconstruction_grid(
    path: str | Path,
    x: Tensor,
    x_hat: Tensor,
    *,
    data_range: float,
    title: str,
    max_images: int = 12,
) -> None:
    """Draw :func:`reconstruction_grid` for images ``x``, ``x_hat`` (N, C, H, W) with per-image
    SSIM and save it as PNG to ``path`` atomically."""
    x, x_hat = x[:max_images], x_hat[:max_images]
    per = ssim_per_sample(x, x_hat, data_range=data_range)
    fig = reconstruction_grid(x, x_hat, ssim=per, data_range=data_range, title=title)
    save_grid(fig, path)
