"""Curves through a sweep: settings that differ in one strength knob (alpha, sigma, s, ...).

The NoPeek curve holds the settings without defenses, ordered by alpha. A defense curve holds
the settings that use one defense spec and the same alpha, whose specs differ only in one
numeric argument (``cut-noise:gaussian,sigma=0.1,clip=1`` ... ``sigma=1``): that argument is the
x axis.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from nopeek.eval.summary import SettingSummary


@dataclass
class Series:
    """``points`` [(x, setting summary)] sorted by x; ``knob`` names the x axis."""

    title: str
    knob: str
    points: list[tuple[float, SettingSummary]]


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def split_spec(spec: str) -> tuple[str, list[tuple[str | None, str]]]:
    """A spec's name and its (key or None, value) arguments.

    >>> split_spec("cut-noise:gaussian,sigma=0.5")
    ('cut-noise', [(None, 'gaussian'), ('sigma', '0.5')])

    >>> split_spec("marvell:s=1")
    ('marvell', [('s', '1')])
    """
    name, _, rest = spec.partition(":")
    args: list[tuple[str | None, str]] = []
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        args.append((key.strip(), value.strip()) if eq else (None, key.strip()))
    return name.strip(), args


def alpha_series(summaries: list[SettingSummary]) -> Series | None:
    """NoPeek alone, by alpha (None when fewer than two alphas were swept)."""
    pts = sorted(((s.alpha, s) for s in summaries if not s.defenses), key=lambda p: p[0])
    return Series("NoPeek", "alpha", pts) if len(pts) >= 2 else None


def defense_series(summaries: list[SettingSummary]) -> list[Series]:
    """One series per (alpha, defense, fixed arguments) with a varying numeric argument.

    A plain positional number (``noise:0.5``) counts as the knob ``strength``.
    """
    groups: dict[tuple, list[tuple[float, SettingSummary]]] = defaultdict(list)
    for s in summaries:
        if not s.defenses or "+" in s.defenses:
            continue
        name, args = split_spec(s.defenses)
        for i, (key, value) in enumerate(args):
            x = _number(value)
            if x is None:
                continue
            knob = key or "strength"
            rest = tuple(a for j, a in enumerate(args) if j != i)
            groups[(s.alpha, name, knob, rest)].append((x, s))
    out = []
    for (alpha, name, knob, rest), pts in groups.items():
        if len({x for x, _ in pts}) < 2:
            continue
        fixed = ",".join(f"{k}={v}" if k else v for k, v in rest)
        title = name + (f" ({fixed})" if fixed else "") + (f", alpha={alpha:g}" if alpha else "")
        out.append(Series(title, knob, sorted(pts, key=lambda p: p[0])))
    return out


def all_series(summaries: list[SettingSummary]) -> list[Series]:
    """The NoPeek curve (if any) then every defense curve, over the uncompressed settings
    (compressors have a figure of their own, against the bytes they send)."""
    summaries = [s for s in summaries if not s.compress]
    first = alpha_series(summaries)
    return ([first] if first else []) + defense_series(summaries)
