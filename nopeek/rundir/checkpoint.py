"""Per-epoch checkpoints of a split training run, and exact resume.

A checkpoint holds every party's segments and optimizer, its compressors' state (error-feedback
residuals, random-k generators), the hooks' state (noise generators, accountants), the wire log
so far and the training history. It is saved atomically and loaded with ``weights_only=True``
(plain tensors and containers only, no pickled code).
"""

from __future__ import annotations

import os
from dataclasses import MISSING, astuple, fields
from pathlib import Path
from typing import Any

from nopeek import schema as S
from nopeek.errors import CheckpointError
from nopeek.io import atomic_torch_save, safe_torch_load
from nopeek.runtime.channel import Capture, WireRecord

FILENAME = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
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
    "wire_records": (S.list_of(_record), "a list of wire records (tuples)"),
    "captures": (S.list_of(_capture), "a list of (record, tensor, ids)"),
}


def save(
    out: Path, runner: Any, epochs_done: int, *, captures: bool = True, keep_previous: bool = False
) -> None:
    """Write the runner's state after ``epochs_done`` epochs to ``out/checkpoint.pt``.

    ``captures=False`` (for a finished run, whose captures are in observations.pt) keeps the
    file small.
    """
    state = {
        "format": FORMAT,
        "config": runner.config.to_dict(),
        "epoch": epochs_done,
        "parties": {n: [m.state_dict() for m in p.modules] for n, p in runner.parties.items()},
        "held": {n: _held(p) for n, p in runner.parties.items()},
        "channel_bytes": _channel_bytes(runner),
        "flops_per_sample": {"|".join(k): v for k, v in runner.flops_per_sample.items()},
        "optimizers": {
            n: p.optimizer.state_dict() for n, p in runner.parties.items() if p.optimizer
        },
        "hooks": [h.state_dict() for h in runner.hooks],
        "compressors": {
            n: {k: c.state_dict() for k, c in p.compress.items()} for n, p in runner.parties.items()
        },
        "history": runner.history,
        "train_seconds": runner.train_seconds,
        "wire_records": [astuple(r) for r in runner.wire.records],
        "captures": [(astuple(c.record), c.tensor, c.ids) for c in runner.wire.captures]
        if captures
        else [],
    }
    if keep_previous and (out / FILENAME).is_file():  # a distributed party: the previous epoch
        os.replace(out / FILENAME, out / PREVIOUS)  # stays, for the parties' common checkpoint
    atomic_torch_save(state, out / FILENAME)


def read(path: Path) -> dict:
    """The checkpoint in ``path``, its format and every field's type checked (one line naming
    the file and the field otherwise)."""
    state = safe_torch_load(path, what="checkpoint", fix=FIX)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a nopeek checkpoint; {FIX}")
    for key, (check, want) in SCHEMA.items():
        S.take(state, key, check, want, where=f"checkpoint {path}", fix=FIX, error=CheckpointError)
    return state


def load(out: Path, config: Any) -> dict:
    """Load and check the checkpoint in ``out`` against ``config``."""
    path = out / FILENAME
    state = read(path)
    saved, now = state["config"], config.to_dict()
    diff = [f"{k}: {saved.get(k)!r} vs {now.get(k)!r}" for k in now if saved.get(k) != now.get(k)]
    if diff:
        raise CheckpointError(
            f"checkpoint {path} was made with another configuration ({'; '.join(diff)}); "
            "resume with the same options or train anew with --overwrite"
        )
    return state


def _channel_bytes(runner: Any) -> list[int]:
    """A distributed channel's (header, payload) byte counters, so a resumed run counts on."""
    ch = getattr(getattr(runner, "runtime", None), "channel", None)
    return [int(getattr(ch, "header_bytes", 0)), int(getattr(ch, "payload_bytes", 0))]


def _held(party: Any) -> list[str]:
    """The nodes whose segment ``party`` holds (a relay client between turns holds none)."""
    return [n for n, m in party.segments.items() if m is not None]


def _restore_segments(party: Any, held: list[str]) -> None:
    """Hold exactly the segments ``held`` (built fresh where needed; a fresh optimizer then)."""
    if held == _held(party):
        return
    for node in party.segments:
        if node in held and party.segments[node] is None:
            party.segments[node] = party.factories[node]()
        elif node not in held:
            party.segments[node] = None
    party.reset_optimizer()


def load_epoch(out: Path, config: Any, epoch: int) -> dict:
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


def restore(state: dict, runner: Any) -> int:
    """Put the checkpoint's state into ``runner``; returns the number of epochs done."""
    try:
        for name, party in runner.parties.items():
            _restore_segments(party, state.get("held", {}).get(name, _held(party)))
            for module, sd in zip(party.modules, state["parties"][name], strict=True):
                module.load_state_dict(sd)
            if party.optimizer is not None:
                party.optimizer.load_state_dict(state["optimizers"][name])
        for hook, hs in zip(runner.hooks, state["hooks"], strict=True):
            hook.load_state_dict(hs)
        for name, party in runner.parties.items():
            for kind, cs in state.get("compressors", {}).get(name, {}).items():
                party.compress[kind].load_state_dict(cs)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint does not fit this model ({S.brief(exc)}); train anew with --overwrite"
        ) from None
    runner.history = {k: list(v) for k, v in state["history"].items()}
    runner.train_seconds = float(state["train_seconds"])
    ch = getattr(getattr(runner, "runtime", None), "channel", None)
    if hasattr(ch, "header_bytes") and "channel_bytes" in state:
        ch.header_bytes, ch.payload_bytes = (int(v) for v in state["channel_bytes"])
    saved_flops = state.get("flops_per_sample", {})
    runner.flops_per_sample = {tuple(k.split("|")): dict(v) for k, v in saved_flops.items()}
    runner.wire.records[:] = [WireRecord(*r) for r in state["wire_records"]]
    runner.wire.captures[:] = [Capture(WireRecord(*r), t, i) for r, t, i in state["captures"]]
    return int(state["epoch"])
