"""The writing side of :class:`RunDir`: plan a folder up front, then write it fresh, in place
(resume, reuse) or beside the old one (overwrite), as the package docstring describes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from nopeek.errors import ConfigError, OutputError
from nopeek.io import output_error
from nopeek.rundir._lock import locked
from nopeek.rundir._markers import (
    KINDS,
    MARKER,
    article,
    check_out,
    is_empty,
    kind_of,
    write_marker,
)
from nopeek.rundir._reading import Reading
from nopeek.rundir._staging import clean_stale, recover_siblings, remove_tree, swap


class RunDir(Reading):
    """A nopeek folder of one ``kind`` (``run``, ``sweep``, ``report``, ...) at ``path``.

    Writing: :meth:`plan` checks it up front and says how it will be written; :meth:`writing`
    writes it (fresh, resume, reuse or overwrite). ``flag`` names the option in messages.
    Reading: :meth:`open` an existing folder, then one method per file (:meth:`config`,
    :meth:`metrics`, :meth:`load_checkpoint`, :meth:`observations`, :meth:`attack_result`,
    :meth:`sweep`, :meth:`results`); ``fix``, if given, ends every read error.
    """

    def __init__(
        self, path: str | Path, kind: str, *, flag: str = "--out", fix: str | None = None
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.path, self.kind, self.flag, self.fix = Path(path), kind, flag, fix
        self._holding = False  # inside held(): plan() and writing() take no lock of their own

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r}, {self.kind!r})"

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold this folder's lock across :meth:`plan` and :meth:`writing` (which then take it
        again as a no-op), so that no other process writes the folder between the check and
        the last byte; nothing to hold while its parent does not exist (``writing`` locks
        once it has made it)."""
        if not self.path.parent.is_dir():
            yield
            return
        with locked(self.path, flag=self.flag):
            self._holding = True
            try:
                yield
            finally:
                self._holding = False

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        """This folder's lock, or nothing when :meth:`held` holds it already."""
        return contextlib.nullcontext() if self._holding else locked(self.path, flag=self.flag)

    def plan(self, *, resume: bool = False, overwrite: bool = False, reuse: bool = False) -> str:
        """``"fresh"``, ``"resume"``, ``"reuse"`` or ``"overwrite"``; refuses what it must.

        ``resume`` wins over ``overwrite``; ``reuse`` (sweeps, reports) continues an existing
        folder of this kind in place. Without either, an existing folder is refused. Also puts
        back a folder that a kill left set aside in the middle of a replacement. A folder that
        another process is writing is refused (its staging folder is not a leftover).
        """
        check_out(self.path, flag=self.flag)
        if not self.path.parent.is_dir():  # nothing there yet: no writer, no leftovers
            return self._decide(resume=resume, overwrite=overwrite, reuse=reuse)
        with self._lock():
            return self._decide(resume=resume, overwrite=overwrite, reuse=reuse)

    def _decide(self, *, resume: bool, overwrite: bool, reuse: bool) -> str:
        """:meth:`plan`'s decision, made while no other process writes the folder."""
        recover_siblings(self.path)
        if resume:
            return "resume"
        if is_empty(self.path):
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
            f"{self.flag} {self.path} is a nopeek {found} folder, not {article(self.kind)} "
            "folder; "
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
        self.plan(resume=resume, overwrite=overwrite, reuse=reuse)  # refusals before any mkdir
        parents = _make_parents(self.path)  # the lock lives in the parent
        try:
            with self._lock():  # one writer at a time, then decide anew
                mode = self._decide(resume=resume, overwrite=overwrite, reuse=reuse)
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
        except BaseException:
            _remove_empty(parents)
            raise

    @contextmanager
    def _fresh(self, keep: Callable[[Path], bool] | None) -> Iterator[Path]:
        # the parents exist by now (writing made them for the lock): this creates the folder
        created: list[Path] = []  # the folders this call creates, outermost first
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
            if is_empty(self.path):
                self._undo_fresh(created)  # nothing written yet: nothing to continue
            raise

    def _undo_fresh(self, created: list[Path]) -> None:
        """Remove what a failed fresh write left: the folder, and the parents it created that
        are empty again (another folder may have been written into one of them meanwhile)."""
        if created:
            remove_tree(created[-1])
            for parent in reversed(created[:-1]):
                try:
                    parent.rmdir()
                except OSError:
                    break
        elif self.path.is_dir():  # it existed, empty: empty it again
            for entry in self.path.iterdir():
                remove_tree(entry)

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
            swap(staging, real)
        except BaseException:
            remove_tree(staging)
            raise


def _make_parents(path: Path) -> list[Path]:
    """Create the missing parents of ``path``; the ones this call created, outermost first.
    A parent made meanwhile by another process (the parties of a distributed run create
    ``out/`` together) is fine."""
    created: list[Path] = []
    missing = Path(os.path.abspath(path)).parent
    while not missing.exists():
        created.insert(0, missing)
        missing = missing.parent
    for folder in created:
        try:
            folder.mkdir()
        except FileExistsError as exc:
            if not folder.is_dir():
                raise output_error(exc, folder) from None
        except OSError as exc:
            raise output_error(exc, folder) from None
    return created


def _remove_empty(parents: list[Path]) -> None:
    """Remove the parents a failed write created, innermost first, while they are empty."""
    for parent in reversed(parents):
        try:
            parent.rmdir()
        except OSError:
            break
