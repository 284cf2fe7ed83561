"""Recognising nopeek's folders (the ``.nopeek.json`` marker, or an older folder's layout) and
checking an output folder before anything is written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nopeek.errors import OutputError
from nopeek.io import TEMP_NAME, atomic_write_json

MARKER = ".nopeek.json"
FORMAT = 1
KINDS = ("run", "sweep", "report", "inference", "audit", "match")  # infer, audit, match
# The files that tell a run, a sweep and a report apart (also on RunDir: RunDir.CONFIG, ...).
CONFIG, CHECKPOINT, SWEEP, REPORT = "config.json", "checkpoint.pt", "sweep.json", "report.json"
#: What a report folder holds besides its sweeps (see :mod:`nopeek.eval.report`).
REPORT_ENTRIES = ("figures", REPORT, "report.html", "report.md")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _legacy_kind(path: Path) -> str | None:
    """The kind of a folder written before markers, from its layout (None: not nopeek's).

    A run has a ``config.json`` with the training fields and a ``checkpoint.pt``; a sweep a
    ``sweep.json`` with base, settings, seeds and attacks; a report a ``report.json`` with
    sections, or nothing but report files and a ``sweeps/`` folder of sweeps.
    """
    config = _read_json(path / CONFIG)
    run_keys = {"dataset", "model", "cut", "epochs", "alpha", "seed"}
    is_config = isinstance(config, dict) and run_keys <= config.keys()
    if is_config and (path / CHECKPOINT).is_file():
        return "run"
    spec = _read_json(path / SWEEP)
    if isinstance(spec, dict) and {"base", "settings", "seeds", "attacks"} <= spec.keys():
        return "sweep"
    report = _read_json(path / REPORT)
    if isinstance(report, dict) and "sections" in report:
        return "report"
    names = {p.name for p in path.iterdir()}
    sweeps = path / "sweeps"
    if "sweeps" in names and names <= {"sweeps", *REPORT_ENTRIES} and sweeps.is_dir():
        children = [p for p in sweeps.iterdir() if p.name != MARKER]
        if children and all(p.is_dir() and kind_of(p) == "sweep" for p in children):
            return "report"
    return None


def kind_of(path: str | Path) -> str | None:
    """The kind (one of :data:`KINDS`) if nopeek wrote folder ``path``, else ``None``.

    The marker decides; a folder without one is judged by its layout (older nopeek versions
    wrote no marker), and a marker that does not parse makes the folder foreign.
    """
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return None
    marker = path / MARKER
    if marker.exists():
        data = _read_json(marker)
        ok = isinstance(data, dict) and data.get("kind") in KINDS
        return data["kind"] if ok else None
    try:
        return _legacy_kind(path)
    except OSError:
        return None


def write_marker(path: str | Path, kind: str) -> None:
    """Write ``path/.nopeek.json`` saying that nopeek wrote this ``kind`` of folder."""
    from nopeek import __version__

    atomic_write_json(Path(path) / MARKER, {"kind": kind, "format": FORMAT, "version": __version__})


def check_out(path: str | Path, *, flag: str = "--out") -> None:
    """Refuse an output folder nopeek cannot write, before anything runs (one-line errors).

    Refused: a symbolic link (the message names its target), an existing file, a path under a
    file, and a folder (or, for a new one, its nearest existing parent) that is not writable.
    """
    path = Path(path)
    if path.is_symlink():
        real = os.path.realpath(path)
        raise OutputError(
            f"{flag} {path} is a symbolic link to {real}; nopeek does not write through links: "
            f"pass {flag} {real} or choose another {flag}"
        )
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file, not a folder; choose another {flag}")
    probe = Path(os.path.abspath(path))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(
            f"cannot create {flag} {path}: {probe} is a file, not a folder; choose another {flag}"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == Path(os.path.abspath(path)) else f" (its parent {probe} is not)"
        raise OutputError(
            f"{flag} {path} is not writable{where}; choose another {flag} or fix its permissions"
        )


def is_empty(path: Path) -> bool:
    """Missing, or a folder holding nothing but a marker (or the temporary of a marker write
    that a kill interrupted: a folder nopeek had just made)."""
    if not path.exists():
        return True
    marker_tmp = [p for p in path.iterdir() if TEMP_NAME.match(p.name) and MARKER in p.name]
    return all(p.name == MARKER or p in marker_tmp for p in path.iterdir())


def article(word: str) -> str:
    """``word`` with its indefinite article: "a run", "an inference", "an audit"."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"
