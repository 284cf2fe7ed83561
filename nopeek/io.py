"""Atomic file writes, safe checkpoint loading, and one-line messages for file-system faults.

Every output is written to a temporary file in the same directory (``.<name>.<8 chars>.tmp``)
and renamed into place, so a crash never leaves a half-written file: a reader sees the old file
or the new one. A kill in the middle can leave the temporary behind;
:func:`nopeek.rundir.clean_stale` removes such leftovers from nopeek's own directories.

An ``OSError`` while writing (full disk, size limit, permissions, read-only file system)
becomes an :class:`~nopeek.errors.OutputError` that names the file and the fix.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

import torch

from nopeek.errors import CheckpointError, OutputError

#: Names of the temporaries of :func:`_atomic_write` (``tempfile.mkstemp``'s 8 random chars).
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")

_FIXES = {
    errno.ENOSPC: "no space left on the device; free space or choose another --out",
    errno.EDQUOT: "disk quota exceeded; free space or choose another --out",
    errno.EFBIG: "file too large for the file system or the file-size limit; free space, "
    "raise the limit (ulimit -f) or choose another --out",
    errno.EACCES: "permission denied; choose another --out or fix the folder's permissions",
    errno.EPERM: "operation not permitted; choose another --out or fix the folder's permissions",
    errno.EROFS: "read-only file system; choose another --out",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another --out",
    errno.EISDIR: "a folder is in the way of a file; choose another --out",
}


def describe_os_error(exc: OSError, path: str | Path | None = None) -> str:
    """``exc`` as one line: the path, what went wrong and the fix (no newlines).

    >>> describe_os_error(OSError(errno.ENOSPC, "No space left on device"), "runs/a/x.pt")
    'runs/a/x.pt: no space left on the device; free space or choose another --out'
    """
    where = path if path is not None else exc.filename
    what = _FIXES.get(exc.errno) if exc.errno is not None else None
    if what is None:
        reason = exc.strerror or str(exc) or type(exc).__name__
        what = f"{reason}; check the path and its permissions, or choose another --out"
    text = f"{where}: {what}" if where is not None else what
    return " ".join(str(text).split())


def output_error(exc: OSError, path: str | Path) -> OutputError:
    """The :class:`OutputError` for a failed write of ``path``."""
    return OutputError(f"cannot write {describe_os_error(exc, path)}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise output_error(exc, path) from None
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (an ``OSError`` becomes an ``OutputError``)."""
    _atomic_write(Path(path), lambda fh: fh.write(data))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (NaN is refused: it is not JSON)."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode())


class _Recording:
    """A write-only file wrapper that remembers the ``OSError`` of a failed write.

    ``torch.save`` turns a failing ``write`` into a ``RuntimeError`` about stream positions;
    keeping the original error lets a full disk be reported as a full disk.
    """

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` atomically."""

    def write(fh: IO[bytes]) -> None:
        rec = _Recording(fh)
        try:
            # torch.save writes to any object with write() and flush(); its hint says IO[bytes]
            torch.save(obj, cast(IO[bytes], rec))
        except RuntimeError:
            if rec.error is not None:
                raise rec.error from None
            raise

    _atomic_write(Path(path), write)


def safe_torch_load(
    path: str | Path,
    *,
    what: str = "checkpoint",
    fix: str = "train the run anew with --overwrite (not --resume)",
) -> Any:
    """Load a file written by :func:`atomic_torch_save` with ``weights_only=True``.

    A missing, truncated or foreign file becomes a one-line :class:`CheckpointError` that calls
    the file ``what`` (``"checkpoint"``, ``"observations file"``) and ends with ``fix``.
    """
    from nopeek.schema import brief

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no {what} at {path}; {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and unpickler errors all mean "not a valid file"
        raise CheckpointError(
            f"{what} {path} is corrupt, truncated or not nopeek's ({brief(exc)}); {fix}"
        ) from None
