"""Staging folders, atomic swaps, and the clean-up of what an interrupted write left behind.

Staging and set-aside folders are named ``.<name>.nopeek-staging-<8>`` / ``.<name>.nopeek-old-<8>``
beside a folder being replaced, and ``.nopeek-staging-<8>`` / ``.nopeek-old-<8>`` inside a folder
whose entries are replaced (:func:`staged_entries`).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from nopeek.errors import OutputError
from nopeek.io import TEMP_NAME, describe_os_error, output_error

log = logging.getLogger(__name__)

STAGE = re.compile(r"^\.(?:(?P<name>.+)\.)?nopeek-(?P<role>staging|old)-[a-z0-9_]{8}$")


def remove_tree(path: Path) -> None:
    """Delete ``path`` (a folder nopeek wrote); a failure is logged, not raised."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove %s (%s); delete it by hand", path, exc)


def _settle(stage: Path, match: re.Match[str]) -> None:
    """Deal with a staging or set-aside folder left by a kill.

    Staging folders are unfinished: deleted. A set-aside old folder whose original is missing
    (a kill between the two renames of a swap) is put back; otherwise it is deleted.
    """
    try:
        if match["role"] == "old" and match["name"] is not None:
            original = stage.parent / match["name"]
            if not os.path.lexists(original):
                os.rename(stage, original)
                log.info("restored %s after an interrupted replacement", original)
                return
        elif match["role"] == "old":  # entries set aside by staged_entries: put missing back
            for entry in stage.iterdir():
                if not os.path.lexists(stage.parent / entry.name):
                    os.rename(entry, stage.parent / entry.name)
    except OSError as exc:
        log.warning("could not restore from %s (%s); look into it by hand", stage, exc)
        return
    remove_tree(stage)


def recover_siblings(path: Path) -> None:
    """Settle the staging/set-aside siblings of ``path`` left by an interrupted replacement."""
    parent, prefix = path.parent, f".{path.name}.nopeek-"
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        match = STAGE.match(entry.name)
        if match and match["name"] == path.name and entry.is_dir(follow_symlinks=False):
            _settle(Path(entry.path), match)


def clean_stale(path: str | Path) -> list[Path]:
    """Remove leftovers of interrupted writes inside nopeek folder ``path``; returns them.

    Leftovers are the hidden temporaries of nopeek's atomic writes (``.<file>.<8>.tmp``, see
    :mod:`nopeek.io`) and staging folders of interrupted replacements, at any depth. Call it
    only on a folder nopeek wrote (:func:`~nopeek.rundir.kind_of`).
    """
    removed = []
    for dirpath, dirnames, filenames in os.walk(path):
        here = Path(dirpath)
        for name in filenames:
            if TEMP_NAME.match(name):
                remove_tree(here / name)
                removed.append(here / name)
        for name in list(dirnames):
            match = STAGE.match(name)
            if match:
                dirnames.remove(name)
                _settle(here / name, match)
                removed.append(here / name)
    if removed:
        log.info("removed %d leftovers of interrupted writes in %s", len(removed), path)
    return removed


def swap(new: Path, path: Path) -> None:
    """Replace folder ``path`` by folder ``new`` (same parent); on failure ``path`` is kept."""
    old = path.parent / f".{path.name}.nopeek-old-{secrets.token_hex(4)}"
    try:
        os.rename(path, old)
        try:
            os.rename(new, path)
        except BaseException:
            os.rename(old, path)
            raise
    except OSError as exc:
        raise OutputError(f"cannot replace {describe_os_error(exc, path)}") from None
    remove_tree(old)


@contextmanager
def staged_entries(folder: str | Path, names: Sequence[str]) -> Iterator[Path]:
    """Write entries ``names`` of ``folder`` into a hidden staging folder, then move them in.

    The body writes into the yielded staging folder; once it has finished, each staged entry
    replaces ``folder/<name>`` (by renames, in the order of ``names``) and the old ones are
    deleted. Other entries of ``folder`` are never touched (a report keeps its ``sweeps/``).
    On failure the old entries stay and the staging folder is removed.
    """
    folder = Path(folder)
    try:
        staging = Path(tempfile.mkdtemp(prefix=".nopeek-staging-", dir=folder))
    except OSError as exc:
        raise output_error(exc, folder) from None
    try:
        yield staging
        _swap_entries(staging, folder, names)
    finally:
        remove_tree(staging)


def _swap_entries(staging: Path, folder: Path, names: Sequence[str]) -> None:
    old = folder / f".nopeek-old-{secrets.token_hex(4)}"
    moved_out, moved_in = [], []
    try:
        old.mkdir()
        for name in names:
            if os.path.lexists(folder / name):
                os.rename(folder / name, old / name)
                moved_out.append(name)
        for name in names:
            if os.path.lexists(staging / name):
                os.rename(staging / name, folder / name)
                moved_in.append(name)
    except BaseException as exc:
        for name in moved_in:
            os.rename(folder / name, staging / name)
        for name in moved_out:
            os.rename(old / name, folder / name)
        remove_tree(old)
        if isinstance(exc, OSError):
            raise output_error(exc, folder) from None
        raise
    remove_tree(old)
