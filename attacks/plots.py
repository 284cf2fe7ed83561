"""A picture of a reconstruction attack: originals on top, reconstructions below, SSIM per pair."""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: renders with Agg, never opens a window
from torch import Tensor

from nopeek.attacks.metrics import ssim_per_sample
from nopeek.io import atomic_write_bytes

DPI = 100  # the grid is saved at this resolution
FONT = 10  # points: SSIM numbers and row labels (about 14 px at DPI)
CELL = 0.8  # inches per image column: 12 columns fit a report page (about 1000 px)


def _as_image(x: Tensor):
    """(C, H, W) tensor -> an array matplotlib shows: (H, W) for grey, (H, W, C) for colour."""
    x = x.detach().float().cpu()
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


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

    ``ssim`` (N,) per-image values label the reconstructions. Pixel values are shown on the
    fixed scale [0, data_range], so a washed-out reconstruction looks washed out. Text is
    :data:`FONT` points, legible at 100 % zoom of the PNG saved at :data:`DPI`.
    """
    n = min(len(x), max_images)
    fig = Figure(figsize=(max(CELL * n + 0.6, 4.5), 2.5), dpi=DPI)
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        for row, img in enumerate((x[i], x_hat[i])):
            ax = axes[row][i]
            ax.imshow(
                _as_image(img.clamp(0, data_range) / data_range),
                cmap="gray",
                vmin=0.0,
                vmax=1.0,
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
        if ssim is not None:
            axes[1][i].set_title(f"{float(ssim[i]):.2f}", fontsize=FONT, pad=2)
    axes[0][0].set_ylabel("original", fontsize=FONT)
    axes[1][0].set_ylabel("reconstr.", fontsize=FONT)
    fig.suptitle(title, fontsize=FONT + 1)
    fig.tight_layout()
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
