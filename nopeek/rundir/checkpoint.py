"""Per-epoch checkpoints of a split training run, and exact resume.

A checkpoint is a :class:`~nopeek.training.runner.Runner`'s ``state_dict()`` in the file's
layout (:func:`to_file` / :func:`from_file`): every party's segments and optimizer, its
compressors' state (error-feedback residuals, random-k generators), the hooks' state (noise
generators, accountants), the wire log so far and the training history. This module only
writes, reads and checks that file; what goes in it is the runner's and the parties' own
``state_dict()`` / ``load_state_dict()``. It is saved atomically and loaded with
``weights_only=True`` (plain tensors and containers only, no pickled code).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from nopeek import schema as S
from nopeek.errors import CheckpointError
from nopeek.io import atomic_torch_save, safe_torch_load
from nopeek.runtime.channel import WireRecord

FILENAME = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
SHARDS = "captures"  # the folder of a training checkpoint's capture shards
FORMAT = "nopeek-checkpoint-1"
FIX = "train the run anew with --overwrite"


_RECORD_SIZES = (
    sum(f.default is MISSING and f.default_factory is MISSING for f in fields(WireRecord)),
    len(fields(WireRecord)),
)


def _record(value: Any) -> bool:
    """A saved :class:`WireRecord`: a tuple with one item per field (trailing defaults may be
    missing)."""
    low, high = _RECORD_SIZES
    return isinstance(value, (list, tuple)) and low <= len(value) <= high


def _capture(value: Any) -> bool:
    """A saved capture: (record, tensor (N, ...), ids (N,) or None)."""
    return (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and _record(value[0])
        and S.is_tensor(value[1])
        and (value[2] is None or S.is_tensor(value[2]))
    )


# field -> (check, what it must be), for everything that resume and the attacks read
SCHEMA = {
    "config": (S.is_dict, "a dict"),
    "epoch": (lambda v: S.is_int(v) and v >= 0, "an integer >= 0"),
    "train_seconds": (S.is_number, "a number"),
    "parties": (S.dict_of(S.list_of(S.dict_of(S.is_tensor))), "party -> module state dicts"),
    "optimizers": (S.dict_of(S.is_dict), "party -> an optimizer state dict"),
    "hooks": (S.list_of(S.is_dict), "a list of hook state dicts"),
    "history": (S.dict_of(S.list_of(S.is_number)), "name -> list of numbers"),
    "wire_records": (S.list_of(_record), "a list of wire records (tuples), saved as JSON text"),
    "captures": (S.list_of(_capture), "a list of (record, tensor, ids)"),
}


_SHARD_NAME = re.compile(r"(\d{8})-(\d{8})\.pt")


def _shard(value: Any) -> bool:
    """A listed capture shard: (file name ``<first>-<end>.pt``, how many captures it holds)."""
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and S.is_int(value[1])):
        return False
    name = _SHARD_NAME.fullmatch(value[0]) if isinstance(value[0], str) else None
    return name is not None and int(name[2]) - int(name[1]) == value[1] > 0


# party state key -> the file's field holding it for every party (``{party: value}``)
_PER_PARTY = {
    "modules": "parties",
    "held": "held",
    "optimizer": "optimizers",
    "compressors": "compressors",
}


def save(
    out: Path, runner: Any, epochs_done: int, *, captures: bool = True, keep_previous: bool = False
) -> None:
    """Write ``runner.state_dict()`` (a :class:`~nopeek.training.runner.Runner`'s) after
    ``epochs_done`` epochs to ``out/checkpoint.pt`` in the file's layout (:func:`to_file`).

    The captured tensors recorded since the last save go to a new shard,
    ``out/captures/<first>-<end>.pt``, which the checkpoint lists (``capture_files``): each
    epoch writes its own captures once, where a checkpoint holding them all was rewritten whole
    every epoch (17 MB by epoch 30 of a digits run, 250 MB written in all). :func:`read` puts
    them back. ``captures=False`` (for a finished run, whose captures are in observations.pt)
    lists none and removes the shards once the checkpoint is written; a distributed party keeps
    them listed, since it may be restarted with the others after it finished (from this or its
    previous checkpoint) and must then rebuild the same observations. ``keep_previous`` keeps
    the checkpoint before it as ``checkpoint.prev.pt`` (its shards are a prefix of these).
    """
    distributed = getattr(runner, "distributed", False)
    if captures:
        _save_new_captures(out, runner)
    elif not distributed:
        runner.capture_files = []
    state = to_file(runner.state_dict(captures=False) | {"epoch": epochs_done})
    if keep_previous and (out / FILENAME).is_file():  # a distributed party: the previous epoch
        os.replace(out / FILENAME, out / PREVIOUS)  # stays, for the parties' common checkpoint
    atomic_torch_save(state, out / FILENAME)
    if not captures and not distributed:
        shutil.rmtree(out / SHARDS, ignore_errors=True)


def _save_new_captures(out: Path, runner: Any) -> None:
    """Write the runner's captures not yet in a shard (the wire log only appends) to a new
    shard named by their positions, and list it in ``runner.capture_files``."""
    done = sum(count for _, count in runner.capture_files)
    new = runner.wire.captures[done:]
    if not new:
        return
    name = f"{done:08d}-{done + len(new):08d}.pt"
    atomic_torch_save([(c.record.row(), c.tensor, c.ids) for c in new], out / SHARDS / name)
    runner.capture_files.append((name, len(new)))


def _read_shards(state: dict[str, Any], path: Path) -> None:
    """Put the captures of the shards that the checkpoint at ``path`` lists back into its
    ``captures`` (each shard checked like the checkpoint itself)."""
    where = f"checkpoint {path}"
    files = S.take(state, "capture_files", S.list_of(_shard), "a list of (file, count)",
                   where=where, fix=FIX, error=CheckpointError)  # fmt: skip
    captures = list(state["captures"])
    firsts = [int(_SHARD_NAME.fullmatch(name)[1]) for name, _ in files]  # type: ignore[index]
    if firsts != [len(captures) + sum(c for _, c in files[:i]) for i in range(len(files))]:
        raise CheckpointError(f"{where} lists capture shards out of order or with gaps; {FIX}")
    for name, count in files:
        shard = path.parent / SHARDS / name
        saved = safe_torch_load(shard, what="capture shard", fix=FIX)
        if not S.list_of(_capture)(saved) or len(saved) != count:
            raise CheckpointError(
                f"capture shard {shard} does not hold the {count} captures {where} lists; {FIX}"
            )
        captures += saved
    state["captures"] = captures


def to_file(state: dict[str, Any]) -> dict[str, Any]:
    """A runner's state (:meth:`~nopeek.training.runner.Runner.state_dict`) in the file's
    layout: ``format`` first, and each party's state spread over one field per part
    (``parties``: party -> its modules' state dicts, ``held``, ``optimizers`` (parties with
    one), ``compressors``); the rest as it is.

    >>> state = {"epoch": 1, "hooks": [], "parties": {"client": {
    ...     "held": ["client"], "modules": [{}], "optimizer": None, "compressors": {}}}}
    >>> saved = to_file(state)
    >>> saved["format"], saved["parties"], saved["held"], saved["optimizers"]
    ('nopeek-checkpoint-1', {'client': [{}]}, {'client': ['client']}, {})
    >>> from_file(saved) == {"epoch": 1, "hooks": [], "parties": {"client": {
    ...     "held": ["client"], "modules": [{}], "compressors": {}}}}
    True
    """
    parties = state["parties"]
    out: dict[str, Any] = {"format": FORMAT}
    out |= {k: v for k, v in state.items() if k != "parties"}
    if "wire_records" in out:
        out["wire_records"] = json.dumps(out["wire_records"], separators=(",", ":"))
    for key, name in _PER_PARTY.items():
        out[name] = {p: s[key] for p, s in parties.items() if s.get(key) is not None}
    return out


def _records_from_text(text: str) -> Any:
    """The wire records a checkpoint holds as JSON text, each a tuple (its shape one too).

    A run's wire log grows by a few records a step and every epoch's checkpoint holds it all:
    as one text, torch's pickler handles one object instead of a dozen a record (at epoch 30
    of a digits run, 20,000 objects and 8 ms a save, which was half of what saving cost).
    Text that does not parse to a list comes back as it is, for the schema check to name.
    """
    try:
        rows = json.loads(text)
    except ValueError:
        return text
    if not isinstance(rows, list):
        return text
    return [
        tuple(tuple(v) if isinstance(v, list) else v for v in row) if isinstance(row, list) else row
        for row in rows
    ]


def from_file(saved: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`to_file`: the state a runner loads. A part a file lacks (``held`` or
    ``compressors`` in checkpoints older than them; ``optimizers`` of a party without one) is
    left out of that party's state."""
    parties: dict[str, dict[str, Any]] = {p: {} for p in saved["parties"]}
    for key, name in _PER_PARTY.items():
        for party, value in saved.get(name, {}).items():
            if party in parties:
                parties[party][key] = value
    rest = {k: v for k, v in saved.items() if k != "format" and k not in _PER_PARTY.values()}
    if isinstance(rest.get("wire_records"), str):
        rest["wire_records"] = _records_from_text(rest["wire_records"])
    return rest | {"parties": parties}


def read(path: Path) -> dict[str, Any]:
    """The checkpoint in ``path``, its format and every field's type checked (one line naming
    the file and the field otherwise)."""
    state = safe_torch_load(path, what="checkpoint", fix=FIX)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a nopeek checkpoint; {FIX}")
    if isinstance(state.get("wire_records"), str):
        state["wire_records"] = _records_from_text(state["wire_records"])
    for key, (check, want) in SCHEMA.items():
        S.take(state, key, check, want, where=f"checkpoint {path}", fix=FIX, error=CheckpointError)
    if "capture_files" in state:  # (checkpoints before the shards hold their captures inline)
        _read_shards(state, path)
    return state


def load(out: Path, config: Any) -> dict[str, Any]:
    """Load and check the checkpoint in ``out`` against ``config`` (a distributed party killed
    between keeping its last checkpoint as the previous one and writing the next has only that
    one: then it)."""
    path = out / FILENAME
    if not path.is_file() and (out / PREVIOUS).is_file():
        path = out / PREVIOUS
    state = read(path)
    saved, now = state["config"], config.to_dict()
    diff = [f"{k}: {saved.get(k)!r} vs {now.get(k)!r}" for k in now if saved.get(k) != now.get(k)]
    if diff:
        raise CheckpointError(
            f"checkpoint {path} was made with another configuration ({'; '.join(diff)}); "
            "resume with the same options or train anew with --overwrite"
        )
    return state


def load_epoch(out: Path, config: Any, epoch: int) -> dict[str, Any]:
    """The checkpoint of ``epoch`` in ``out``: the last one, or the one before it (a distributed
    party keeps both, so all parties can restart from their last common epoch)."""
    state = load(out, config)
    if state["epoch"] == epoch:
        return state
    prev = out / PREVIOUS
    if prev.is_file():
        old = read(prev)
        if old["epoch"] == epoch:
            return old
    raise CheckpointError(
        f"{out} has no checkpoint of epoch {epoch}, the last one every party has; train the "
        "parties anew with --overwrite"
    )


def restore(state: dict[str, Any], into: Any, *, where: Path | None = None, **options: Any) -> None:
    """Load checkpoint ``state`` (as :func:`read` returns it) into ``into``: anything with
    ``load_state_dict`` taking a runner's state (a :class:`~nopeek.training.runner.Runner`, or
    its runtime, to which ``options`` go: ``parties``, ``segments_only``). A checkpoint that
    does not fit is one line (naming ``where``, the file, if given)."""
    try:
        into.load_state_dict(from_file(state), **options)
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        what = f"checkpoint {where}" if where is not None else "checkpoint"
        raise CheckpointError(
            f"{what} does not fit this model ({S.brief(exc)}); train anew with --overwrite"
        ) from None
