"""One writer per folder: an exclusive lock held while a folder is written.

:meth:`RunDir.writing <nopeek.rundir.RunDir.writing>` holds ``fcntl.flock`` on a lock file
beside the folder, ``.<name>.nopeek-lock`` in its parent, from before it decides how to write
(fresh, resume, overwrite) until the folder is complete. A second command writing the same
folder meanwhile is refused in one line naming the holder's process id, instead of both
reporting success while one's run replaced the other's. The lock file holds that pid; the
holder removes it when done (a kill leaves it behind, harmless: the kernel releases the lock,
and the next writer takes the file over). Where the parent is not writable (a resume in place
under a read-only parent) the folder itself is locked instead. Without ``fcntl`` (Windows) there
is no lock.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nopeek.errors import OutputError
from nopeek.io import output_error

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    _HAS_FCNTL = False
else:
    _HAS_FCNTL = True

SUFFIX = ".nopeek-lock"


def lock_path(path: Path) -> Path:
    """Where the lock of folder ``path`` lives: ``<parent>/.<name>.nopeek-lock``."""
    path = Path(os.path.abspath(path))
    return path.parent / f".{path.name}{SUFFIX}"


@contextmanager
def locked(path: str | Path, *, flag: str = "--out") -> Iterator[None]:
    """Hold the lock of folder ``path`` (its parent must exist); refuse a held one in one line.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with locked(Path(tmp) / "run"):
    ...         try:
    ...             with locked(Path(tmp) / "run"):
    ...                 pass
    ...         except OutputError as exc:
    ...             print(f"another nopeek process (pid {os.getpid()})" in str(exc))
    True
    """
    if not _HAS_FCNTL:  # pragma: no cover
        yield
        return
    path = Path(path)
    fd, owned = _acquire(path, flag)
    try:
        yield
    finally:
        if owned is not None:
            with contextlib.suppress(OSError):
                os.unlink(owned)  # still held: no other process can hold this file meanwhile
        os.close(fd)


def _acquire(path: Path, flag: str) -> tuple[int, Path | None]:
    """``(fd, lock file to remove on release)``; a held lock is an :class:`OutputError`."""
    where = lock_path(path)
    while True:
        try:
            fd = os.open(where, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and path.is_dir():
                return _lock_folder(path, flag), None
            raise output_error(exc, where) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise _busy(path, flag, holder) from None
        # the file may have been released and removed between our open and flock: a lock on
        # an unlinked file excludes no one, so start over on the file now at that path
        try:
            current = os.stat(where).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd, where
        os.close(fd)


def _lock_folder(path: Path, flag: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _busy(path, flag, None) from None
    return fd


def _holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _busy(path: Path, flag: str, pid: int | None) -> OutputError:
    who = f"pid {pid}" if pid is not None else "its pid unknown"
    return OutputError(
        f"{flag} {path} is being written by another nopeek process ({who}): two writers would "
        f"replace each other's work; wait for it to finish, or choose another {flag}"
    )
