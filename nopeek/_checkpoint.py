"""Per-epoch checkpoints of a split training run, and exact resume.

A checkpoint holds every party's segments and optimizer, the hooks' state (noise generators,
accountants), the wire log so far and the training history. It is saved atomically and loaded
with ``weights_only=True`` (plain tensors and containers only, no pickled code).
"""

from __future__ import annotations

from dataclasses import astuple
from pathlib import Path
from typing import Any

from nopeek._io import atomic_torch_save, safe_torch_load
from nopeek.channel import Capture, WireRecord
from nopeek.errors import CheckpointError

FILENAME = "checkpoint.pt"
FORMAT = "nopeek-checkpoint-1"


def save(out: Path, runner: Any, epochs_done: int, *, captures: bool = True) -> None:
    """Write the runner's state after ``epochs_done`` epochs to ``out/checkpoint.pt``.

    ``captures=False`` (for a finished run, whose captures are in observations.pt) keeps the
    file small.
    """
    state = {
        "format": FORMAT,
        "config": runner.config.to_dict(),
        "epoch": epochs_done,
        "parties": {n: [m.state_dict() for m in p.modules] for n, p in runner.parties.items()},
        "optimizers": {
            n: p.optimizer.state_dict() for n, p in runner.parties.items() if p.optimizer
        },
        "hooks": [h.state_dict() for h in runner.hooks],
        "history": runner.history,
        "train_seconds": runner.train_seconds,
        "wire_records": [astuple(r) for r in runner.wire.records],
        "captures": [(astuple(c.record), c.tensor, c.ids) for c in runner.wire.captures]
        if captures
        else [],
    }
    atomic_torch_save(state, out / FILENAME)


def load(out: Path, config: Any) -> dict:
    """Load and check the checkpoint in ``out`` against ``config``."""
    path = out / FILENAME
    state = safe_torch_load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a nopeek checkpoint; train anew with --overwrite")
    saved, now = state["config"], config.to_dict()
    diff = [f"{k}: {saved.get(k)!r} vs {now.get(k)!r}" for k in now if saved.get(k) != now.get(k)]
    if diff:
        raise CheckpointError(
            f"checkpoint {path} was made with another configuration ({'; '.join(diff)}); "
            "resume with the same options or train anew with --overwrite"
        )
    return state


def restore(state: dict, runner: Any) -> int:
    """Put the checkpoint's state into ``runner``; returns the number of epochs done."""
    try:
        for name, party in runner.parties.items():
            for module, sd in zip(party.modules, state["parties"][name], strict=True):
                module.load_state_dict(sd)
            if party.optimizer is not None:
                party.optimizer.load_state_dict(state["optimizers"][name])
        for hook, hs in zip(runner.hooks, state["hooks"], strict=True):
            hook.load_state_dict(hs)
    except (KeyError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise CheckpointError(
            f"checkpoint does not fit this model ({first}); train anew with --overwrite"
        ) from None
    runner.history = {k: list(v) for k, v in state["history"].items()}
    runner.train_seconds = float(state["train_seconds"])
    runner.wire.records[:] = [WireRecord(*r) for r in state["wire_records"]]
    runner.wire.captures[:] = [Capture(WireRecord(*r), t, i) for r, t, i in state["captures"]]
    return int(state["epoch"])
