"""The folders nopeek writes (runs, sweeps, reports): recognise, check, create and replace them.

Every folder nopeek creates gets a marker, ``.nopeek.json``, before anything else::

    {"kind": "run" | "sweep" | "report", "format": 1, "version": "0.1.0"}

and nopeek only ever replaces or adds to a folder that carries the marker of the same kind.
Folders written before the marker existed are recognised by their layout (see
:func:`kind_of`). The rules, shared by the trainer, sweeps and reports (:meth:`RunDir.writing`):

- an ``--out`` that is a file, a symbolic link or not writable is refused up front, in one line;
- **fresh** (``out`` missing or empty): written in place, so that a killed run can be continued
  (``--resume``); if it fails with an error (not an interrupt), what it wrote is removed;
- **resume** / **reuse** (an existing folder of this kind): written in place, after removing
  the leftovers of interrupted writes (:func:`clean_stale`); on failure everything is kept;
- **overwrite**: the new folder is written beside the old one, in a hidden sibling
  ``.<name>.nopeek-staging-*``, and swapped in only once it is complete (old renamed aside,
  new renamed in, old deleted). On any failure, interrupts included, the old folder stays as it
  was and the staging folder is removed; one left by a kill is removed on the next attempt.

One writer per folder at a time: two commands writing the same ``--out`` at once may clash.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     with RunDir(Path(tmp) / "run", "run").writing() as where:
...         _ = (where / "metrics.json").write_text("{}")
...     kind_of(Path(tmp) / "run")
'run'
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from nopeek._io import TEMP_NAME, atomic_write_json, describe_os_error, output_error
from nopeek.errors import ConfigError, OutputError

__all__ = [
    "FORMAT",
    "KINDS",
    "MARKER",
    "RunDir",
    "check_out",
    "clean_stale",
    "kind_of",
    "staged_entries",
    "write_marker",
]

log = logging.getLogger(__name__)

MARKER = ".nopeek.json"
FORMAT = 1
KINDS = ("run", "sweep", "report", "inference", "audit", "match")  # infer, audit, match
#: What a report folder holds besides its sweeps (see :mod:`nopeek.eval.report`).
REPORT_ENTRIES = ("figures", "report.json", "report.html", "report.md")
# Staging and set-aside folders: ".<name>.nopeek-staging-<8>" beside a folder being replaced,
# ".nopeek-staging-<8>" inside a folder whose entries are replaced (staged_entries).
_STAGE = re.compile(r"^\.(?:(?P<name>.+)\.)?nopeek-(?P<role>staging|old)-[a-z0-9_]{8}$")


# ---------------------------------------------------------------- recognising


def _read_json(path: Path):
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
    config = _read_json(path / "config.json")
    run_keys = {"dataset", "model", "cut", "epochs", "alpha", "seed"}
    is_config = isinstance(config, dict) and run_keys <= config.keys()
    if is_config and (path / "checkpoint.pt").is_file():
        return "run"
    spec = _read_json(path / "sweep.json")
    if isinstance(spec, dict) and {"base", "settings", "seeds", "attacks"} <= spec.keys():
        return "sweep"
    report = _read_json(path / "report.json")
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
    """``"run"``, ``"sweep"`` or ``"report"`` if nopeek wrote folder ``path``, else ``None``.

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


# ---------------------------------------------------------------- checking


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


def _is_empty(path: Path) -> bool:
    """Missing, or a folder holding nothing but a marker (or the temporary of a marker write
    that a kill interrupted: a folder nopeek had just made)."""
    if not path.exists():
        return True
    marker_tmp = [p for p in path.iterdir() if TEMP_NAME.match(p.name) and MARKER in p.name]
    return all(p.name == MARKER or p in marker_tmp for p in path.iterdir())


# ---------------------------------------------------------------- cleaning up


def _remove_tree(path: Path) -> None:
    """Delete ``path`` (a folder nopeek wrote); a failure is logged, not raised."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove %s (%s); delete it by hand", path, exc)


def _settle(stage: Path, match: re.Match) -> None:
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
    _remove_tree(stage)


def _recover_siblings(path: Path) -> None:
    """Settle the staging/set-aside siblings of ``path`` left by an interrupted replacement."""
    parent, prefix = path.parent, f".{path.name}.nopeek-"
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        match = _STAGE.match(entry.name)
        if match and match["name"] == path.name and entry.is_dir(follow_symlinks=False):
            _settle(Path(entry.path), match)


def clean_stale(path: str | Path) -> list[Path]:
    """Remove leftovers of interrupted writes inside nopeek folder ``path``; returns them.

    Leftovers are the hidden temporaries of nopeek's atomic writes (``.<file>.<8>.tmp``, see
    :mod:`nopeek._io`) and staging folders of interrupted replacements, at any depth. Call it
    only on a folder nopeek wrote (:func:`kind_of`).
    """
    removed = []
    for dirpath, dirnames, filenames in os.walk(path):
        here = Path(dirpath)
        for name in filenames:
            if TEMP_NAME.match(name):
                _remove_tree(here / name)
                removed.append(here / name)
        for name in list(dirnames):
            match = _STAGE.match(name)
            if match:
                dirnames.remove(name)
                _settle(here / name, match)
                removed.append(here / name)
    if removed:
        log.info("removed %d leftovers of interrupted writes in %s", len(removed), path)
    return removed


# ---------------------------------------------------------------- writing


class RunDir:
    """An output folder of one ``kind`` (``run``, ``sweep`` or ``report``) at ``path``.

    :meth:`plan` checks it up front and says how it will be written; :meth:`writing` writes
    it (fresh, resume, reuse or overwrite, see the module docstring). ``flag`` names the
    option in messages.
    """

    def __init__(self, path: str | Path, kind: str, *, flag: str = "--out") -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.path, self.kind, self.flag = Path(path), kind, flag

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r}, {self.kind!r})"

    def plan(self, *, resume: bool = False, overwrite: bool = False, reuse: bool = False) -> str:
        """``"fresh"``, ``"resume"``, ``"reuse"`` or ``"overwrite"``; refuses what it must.

        ``resume`` wins over ``overwrite``; ``reuse`` (sweeps, reports) continues an existing
        folder of this kind in place. Without either, an existing folder is refused. Also puts
        back a folder that a kill left set aside in the middle of a replacement.
        """
        check_out(self.path, flag=self.flag)
        _recover_siblings(self.path)
        if resume:
            return "resume"
        if _is_empty(self.path):
            return "fresh"
        found = kind_of(self.path)
        if found != self.kind:
            raise self._foreign(found)
        if overwrite:
            self._check_replaceable()
            return "overwrite"
        if reuse:
            return "reuse"
        raise ConfigError(
            f"{self.kind} directory {self.path} exists; pass --overwrite to replace it or "
            "--resume to continue"
        )

    def _foreign(self, found: str | None) -> OutputError:
        if found is None:
            return OutputError(
                f"{self.flag} {self.path} is not empty and is not a nopeek {self.kind} folder "
                f"(no {MARKER}); nopeek only replaces or adds to folders it wrote: choose "
                f"another {self.flag} or empty it yourself"
            )
        return OutputError(
            f"{self.flag} {self.path} is a nopeek {found} folder, not a {self.kind} folder; "
            f"choose another {self.flag}"
        )

    def _check_replaceable(self) -> None:
        real, cwd = self.path.resolve(), Path.cwd().resolve()
        if real == cwd or real in cwd.parents:
            raise OutputError(
                f"{self.flag} {self.path} holds the current directory; change to another "
                "directory to replace it, or choose another --out"
            )
        if not os.access(real.parent, os.W_OK | os.X_OK):
            raise OutputError(
                f"cannot replace {self.path}: its parent folder {real.parent} is not writable; "
                f"choose another {self.flag}"
            )

    @contextmanager
    def writing(
        self,
        *,
        resume: bool = False,
        overwrite: bool = False,
        reuse: bool = False,
        keep: Callable[[Path], bool] | None = None,
    ) -> Iterator[Path]:
        """The folder to write into (``path``, or a staging sibling when overwriting).

        On leaving, a staged folder is swapped in; on an error, a fresh folder is removed
        unless ``keep(path)`` says it holds finished work worth keeping (a sweep's runs).
        """
        mode = self.plan(resume=resume, overwrite=overwrite, reuse=reuse)
        if mode == "overwrite":
            with self._staged() as staging:
                yield staging
        elif mode == "fresh":
            with self._fresh(keep) as path:
                yield path
        else:
            clean_stale(self.path)
            if not (self.path / MARKER).is_file():
                write_marker(self.path, self.kind)  # a folder from before markers
            yield self.path

    @contextmanager
    def _fresh(self, keep: Callable[[Path], bool] | None) -> Iterator[Path]:
        created = []  # the folders this call creates, outermost first
        missing = Path(os.path.abspath(self.path))
        while not missing.exists():
            created.insert(0, missing)
            missing = missing.parent
        try:
            for folder in created:
                try:
                    folder.mkdir()
                except FileExistsError as exc:
                    # a parent made meanwhile by another process (the parties of a distributed
                    # run create out/ together) is fine; the folder itself must be ours
                    if folder == created[-1] or not folder.is_dir():
                        raise output_error(exc, folder) from None
                except OSError as exc:
                    raise output_error(exc, folder) from None
            clean_stale(self.path)  # an interrupted marker write of an earlier attempt
            write_marker(self.path, self.kind)
            yield self.path
        except Exception:  # an interrupt keeps the folder, to be continued
            if keep is None or not keep(self.path):
                self._undo_fresh(created)
            raise
        except BaseException:
            if _is_empty(self.path):
                self._undo_fresh(created)  # nothing written yet: nothing to continue
            raise

    def _undo_fresh(self, created: list[Path]) -> None:
        """Remove what a failed fresh write left: the folder, and the parents it created that
        are empty again (another folder may have been written into one of them meanwhile)."""
        if created:
            _remove_tree(created[-1])
            for parent in reversed(created[:-1]):
                try:
                    parent.rmdir()
                except OSError:
                    break
        elif self.path.is_dir():  # it existed, empty: empty it again
            for entry in self.path.iterdir():
                _remove_tree(entry)

    @contextmanager
    def _staged(self) -> Iterator[Path]:
        real = self.path.resolve()
        try:
            staging = Path(
                tempfile.mkdtemp(prefix=f".{real.name}.nopeek-staging-", dir=real.parent)
            )
        except OSError as exc:
            raise output_error(exc, real.parent) from None
        try:
            write_marker(staging, self.kind)
            yield staging
            _swap(staging, real)
        except BaseException:
            _remove_tree(staging)
            raise


def _swap(new: Path, path: Path) -> None:
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
    _remove_tree(old)


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
        _remove_tree(staging)


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
        _remove_tree(old)
        if isinstance(exc, OSError):
            raise output_error(exc, folder) from None
        raise
    _remove_tree(old)
