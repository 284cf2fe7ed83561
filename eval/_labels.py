"""Point labels that do not overlap: a greedy placement measured with the renderer.

Each label is tried at offsets around its point, nearest first, and takes the first one whose
text box (as the renderer draws it) stays inside the axes and clears every label placed before
it and every point's marker. The figure's layout is run once first and then frozen, so the
boxes measured here are the boxes saved.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.text import Annotation
from matplotlib.transforms import Bbox

# unit directions, nearest-looking first: upper right, lower right, upper left, lower left, ...
_DIRECTIONS = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
_RADII = [4.0 + 6.0 * k for k in range(12)]  # points
_MARKER_PX = 4.0  # half the side of the box kept clear around each marker (pixels)
_PAD_PX = 1.0  # minimal gap between two labels (pixels)


def _marker_boxes(ax: Axes, xy: Sequence[tuple[float, float]]) -> list[Bbox]:
    """A small pixel box around each point's marker."""
    m = _MARKER_PX
    return [
        Bbox.from_extents(px - m, py - m, px + m, py + m) for px, py in ax.transData.transform(xy)
    ]


def _clear(box: Bbox, taken: list[Bbox], frame: Bbox) -> bool:
    """Whether ``box`` lies inside ``frame`` and (padded) overlaps none of ``taken``."""
    inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
    padded = box.padded(_PAD_PX)
    return inside and not any(padded.overlaps(t) for t in taken)


def _offset(dx: int, dy: int, radius: float) -> tuple[tuple[float, float], str, str]:
    """The text offset (points) and alignment for direction (dx, dy) at ``radius``."""
    ha = {1: "left", -1: "right", 0: "center"}[dx]
    va = {1: "bottom", -1: "top", 0: "center"}[dy]
    return (dx * radius, dy * radius), ha, va


def _settle(ann: Annotation, taken: list[Bbox], frame: Bbox) -> Bbox:
    """Move ``ann`` to the first free offset; its box there (the farthest tried if none is)."""
    box = ann.get_window_extent()
    for radius in _RADII:
        for dx, dy in _DIRECTIONS:
            ann.xyann, ha, va = _offset(dx, dy, radius)
            ann.set_horizontalalignment(ha)
            ann.set_verticalalignment(va)
            box = ann.get_window_extent()
            if _clear(box, taken, frame):
                return box
    return box


def place_labels(
    ax: Axes, xy: Sequence[tuple[float, float]], texts: Sequence[str], *, fontsize: float = 8
) -> list[Annotation]:
    """Annotate point ``xy[i]`` (data coordinates) with ``texts[i]``, no two labels overlapping.

    Call it once the axes are drawn in full (limits set): it runs the figure's layout and then
    freezes it (layout engine ``none``), so that the saved labels sit where they were measured.
    """
    fig = ax.get_figure()
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    frame = ax.get_window_extent()
    taken = _marker_boxes(ax, xy)
    placed = []
    for point, text in zip(xy, texts):
        ann = ax.annotate(
            text, point, xytext=(0, 0), textcoords="offset points", fontsize=fontsize, zorder=5
        )
        taken.append(_settle(ann, taken, frame))
        placed.append(ann)
    return placed
