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

from nopeek.errors import CheckpointError, ThreatModelError
from nopeek.io import atomic_torch_save, safe_torch_load
from nopeek.runtime.channel import BACKWARD, FORWARD, Capture, CapturePolicy, WireRecord

GROUP_FIELDS = ("tensor", "ids", "epoch", "step")  # each (M, ...) for the M messages of a group
_FIX = "retrain the run with `nopeek train --overwrite` to rewrite it"


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


def _key(cut: str, direction: str, phase: str, sender: str = "", receiver: str = "") -> str:
    return f"{cut}/{direction}/{phase}/{sender}>{receiver}"


def _parts(key: str) -> tuple[str, str, str, str, str]:
    """``cut/direction/phase/sender>receiver`` -> its five fields (a cut may hold ``/``)."""
    head, _, ends = key.rpartition("/")
    cut, direction, phase = head.rsplit("/", 2)
    sender, _, receiver = ends.partition(">")
    return cut, direction, phase, sender, receiver


@dataclass
class Observations:
    """Captured messages grouped by (cut, direction, phase, sender, receiver).

    Messages of different clients at the same cut never mix: each (sender, receiver) pair is its
    own group. :meth:`get` picks the group; ``sender``/``receiver`` may be left out when only
    one pair exchanged messages at that cut.
    """

    groups: dict[str, dict[str, Tensor]]

    @classmethod
    def from_captures(cls, captures: list[Capture]) -> Observations:
        parts: dict[str, list[Capture]] = defaultdict(list)
        for c in captures:
            r = c.record
            parts[_key(r.cut, r.direction, r.phase, r.sender, r.receiver)].append(c)
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

    def keys(
        self,
        *,
        cut: str,
        direction: str,
        phase: str,
        sender: str | None = None,
        receiver: str | None = None,
    ) -> list[str]:
        """The group keys at ``cut`` in ``direction`` and ``phase`` (from/to the given parties)."""
        out = []
        for key in self.groups:
            c, d, p, s, r = _parts(key)
            if (c, d, p) != (cut, direction, phase):
                continue
            if (sender is None or s == sender) and (receiver is None or r == receiver):
                out.append(key)
        return sorted(out)

    def senders(self, *, cut: str, direction: str, phase: str) -> list[str]:
        """Who sent messages at ``cut`` in ``direction`` and ``phase``."""
        keys = self.keys(cut=cut, direction=direction, phase=phase)
        return sorted({_parts(k)[3] for k in keys})

    def has(
        self,
        *,
        cut: str,
        direction: str,
        phase: str,
        sender: str | None = None,
        receiver: str | None = None,
    ) -> bool:
        keys = self.keys(
            cut=cut, direction=direction, phase=phase, sender=sender, receiver=receiver
        )
        return bool(keys)

    def get(
        self,
        *,
        cut: str,
        direction: str = FORWARD,
        phase: str = "inference",
        sender: str | None = None,
        receiver: str | None = None,
    ) -> Observed:
        """Messages at ``cut`` (between ``sender`` and ``receiver``); raises
        :class:`ThreatModelError` if none were recorded or several parties' messages match."""
        keys = self.keys(
            cut=cut, direction=direction, phase=phase, sender=sender, receiver=receiver
        )
        if not keys:
            have = ", ".join(sorted(self.groups)) or "nothing"
            raise ThreatModelError(
                f"no {direction} messages at cut {cut!r} in phase {phase!r} were recorded "
                f"(recorded: {have}); train with --record-samples > 0"
            )
        if len(keys) > 1:
            pairs = ", ".join(_parts(k)[3] + ">" + _parts(k)[4] for k in keys)
            raise ThreatModelError(
                f"several parties exchanged {direction} messages at cut {cut!r} ({pairs}); "
                "pick one with --party"
            )
        g = self.groups[keys[0]]
        return Observed(g["tensor"], g["ids"], g["epoch"], g["step"])

    def save(self, path: str | Path) -> None:
        atomic_torch_save(self.groups, path)

    @classmethod
    def load(cls, path: str | Path) -> Observations:
        """The observations saved in ``path``, checked: ``cut/direction/phase`` -> a dict of
        :data:`GROUP_FIELDS` tensors with one row per message (one line naming a bad field)."""
        groups = safe_torch_load(path, what="observations file", fix=_FIX)
        where = f"observations file {path}"
        if not isinstance(groups, dict):
            raise CheckpointError(f"{where} must hold a dict of groups; {_FIX}")
        for key, group in groups.items():
            if not isinstance(key, str) or key.count("/") < 3 or ">" not in key:
                raise CheckpointError(
                    f"{where} has a group named {key!r}, not cut/direction/phase/sender>receiver; "
                    f"{_FIX}"
                )
            if not isinstance(group, dict):
                raise CheckpointError(f"{where} group {key!r} must be a dict of tensors; {_FIX}")
            for name in GROUP_FIELDS:
                value = group.get(name)
                if not isinstance(value, Tensor):
                    ok = False
                elif name == "tensor":
                    ok = value.dim() >= 1
                else:  # ids, epochs and steps: integers, one per message
                    ok = value.dim() == 1 and not value.is_floating_point()
                if not ok:
                    want = "a tensor (M, ...)" if name == "tensor" else "an integer tensor (M,)"
                    raise CheckpointError(
                        f"{where} group {key!r} field {name!r} must be {want}; {_FIX}"
                    )
            sizes = {name: len(group[name]) for name in GROUP_FIELDS}
            if len(set(sizes.values())) > 1:
                raise CheckpointError(
                    f"{where} group {key!r} fields have different lengths {sizes}; {_FIX}"
                )
        return cls(groups)
