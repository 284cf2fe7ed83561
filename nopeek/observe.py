"""What an attacker could observe: captured wire messages, grouped and saved with their ids.

The trainer captures a bounded set of messages (see :func:`capture_policy`) and saves them as
``observations.pt`` in the run directory. Attacks read them through :class:`Observations`,
which hands out messages by cut, direction and phase; ground truth stays in the data set and
is looked up by sample id only for scoring.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from nopeek._io import atomic_torch_save, safe_torch_load
from nopeek.channel import BACKWARD, FORWARD, Capture, CapturePolicy, WireRecord
from nopeek.errors import ThreatModelError


def capture_policy(*, record_samples: int, batch_size: int, epochs: int) -> CapturePolicy:
    """Keep the first ``record_samples`` samples' messages per epoch, bounded in memory.

    Training gradients (backward) are kept every epoch (label attacks report per epoch);
    training activations (forward) only in the last epoch; inference messages always.
    """
    steps = math.ceil(record_samples / batch_size) if record_samples > 0 else 0

    def keep(rec: WireRecord) -> bool:
        if rec.phase == "inference":
            return True
        if rec.phase != "train" or rec.step >= steps:
            return False
        return rec.direction == BACKWARD or rec.epoch == epochs - 1

    return keep


@dataclass(frozen=True)
class Observed:
    """Messages observed at one cut: ``tensor`` (M, ...), ``ids`` (M,), ``epoch``/``step`` (M,)."""

    tensor: Tensor
    ids: Tensor
    epoch: Tensor
    step: Tensor

    def at_epoch(self, epoch: int) -> Observed:
        keep = self.epoch == epoch
        return Observed(self.tensor[keep], self.ids[keep], self.epoch[keep], self.step[keep])


def _key(cut: str, direction: str, phase: str) -> str:
    return f"{cut}/{direction}/{phase}"


@dataclass
class Observations:
    """Captured messages grouped by (cut, direction, phase)."""

    groups: dict[str, dict[str, Tensor]]

    @classmethod
    def from_captures(cls, captures: list[Capture]) -> Observations:
        parts: dict[str, list[Capture]] = defaultdict(list)
        for c in captures:
            parts[_key(c.record.cut, c.record.direction, c.record.phase)].append(c)
        groups = {}
        for key, caps in parts.items():
            ids = [c.ids if c.ids is not None else torch.full((len(c.tensor),), -1) for c in caps]
            groups[key] = {
                "tensor": torch.cat([c.tensor for c in caps]),
                "ids": torch.cat(ids).long(),
                "epoch": torch.cat([torch.full((len(c.tensor),), c.record.epoch) for c in caps]),
                "step": torch.cat([torch.full((len(c.tensor),), c.record.step) for c in caps]),
            }
        return cls(groups)

    def has(self, *, cut: str, direction: str, phase: str) -> bool:
        return _key(cut, direction, phase) in self.groups

    def get(self, *, cut: str, direction: str = FORWARD, phase: str = "inference") -> Observed:
        """Messages at ``cut``; raises :class:`ThreatModelError` if none were recorded."""
        key = _key(cut, direction, phase)
        if key not in self.groups:
            have = ", ".join(sorted(self.groups)) or "nothing"
            raise ThreatModelError(
                f"no {direction} messages at cut {cut!r} in phase {phase!r} were recorded "
                f"(recorded: {have}); train with --record-samples > 0"
            )
        g = self.groups[key]
        return Observed(g["tensor"], g["ids"], g["epoch"], g["step"])

    def save(self, path: str | Path) -> None:
        atomic_torch_save(self.groups, path)

    @classmethod
    def load(cls, path: str | Path) -> Observations:
        return cls(safe_torch_load(path))
