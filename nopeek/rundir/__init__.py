"""The folders nopeek writes (runs, sweeps, reports): recognise, check, create, replace, read.

Every folder nopeek creates gets a marker, ``.nopeek.json``, before anything else::

    {"kind": "run" | "sweep" | "report" | ..., "format": 1, "version": "0.1.0"}

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

One writer per folder at a time: :meth:`RunDir.writing` holds a lock (``fcntl.flock`` on
``.<name>.nopeek-lock`` in the parent) from before it decides how to write until the folder is
complete; a second command writing the same ``--out`` meanwhile is refused in one line naming
the holder's pid.

The same :class:`RunDir` reads a finished folder back (the trainer's resume, the attack
harness, inference, sweeps, results and reports all go through it): :meth:`RunDir.open`, then
one method per file (``config()``, ``metrics()``, ``load_checkpoint()``, ``observations()``,
``attack_result(stem)``, ``sweep()``, ``results()``), with the file names as constants on the
class (``RunDir.CONFIG``, ...) and every failure one line naming the file and the fix.

The package: ``_markers`` (recognising and checking), ``_staging`` (swaps and clean-up),
``_lock`` (one writer at a time), ``_writing`` (:class:`RunDir`'s writing side), ``_reading``
(its reading side).

>>> import tempfile
>>> from pathlib import Path
>>> with tempfile.TemporaryDirectory() as tmp:
...     with RunDir(Path(tmp) / "run", "run").writing() as where:
...         _ = (where / RunDir.METRICS).write_text('{"test_accuracy": 0.9}')
...     run = RunDir.open(Path(tmp) / "run")
...     kind_of(run.path), run.metrics()
('run', {'test_accuracy': 0.9})
"""

from __future__ import annotations

from nopeek.rundir._markers import (
    FORMAT,
    KINDS,
    MARKER,
    REPORT_ENTRIES,
    check_out,
    kind_of,
    write_marker,
)
from nopeek.rundir._reading import party_folders
from nopeek.rundir._staging import clean_stale, staged_entries
from nopeek.rundir._writing import RunDir

__all__ = [
    "FORMAT",
    "KINDS",
    "MARKER",
    "REPORT_ENTRIES",
    "RunDir",
    "check_out",
    "clean_stale",
    "kind_of",
    "party_folders",
    "staged_entries",
    "write_marker",
]
