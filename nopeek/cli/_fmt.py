"""The one rounding rule of every number the CLI prints, always after the metric's name.

>>> metric("ssim", 0.87312), metric("mse", 6.5e-15), metric("leak", None)
('ssim 0.873', 'mse 6.5e-15', 'leak n/a')
"""

from __future__ import annotations


def number(value: float | int | None) -> str:
    """3 decimals; a nonzero value below 0.001 in 3 significant digits; ``n/a`` for None.

    >>> number(23.45678), number(0.0), number(0.00012345), number(7)
    ('23.457', '0.000', '0.000123', '7')
    """
    if value is None:
        return "n/a"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    value = float(value)
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.3g}"
    return f"{value:.3f}"


def metric(name: str, value: float | int | None) -> str:
    """``"name value"`` with :func:`number`'s rounding."""
    return f"{name} {number(value)}"
