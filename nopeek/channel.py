"""Channels carry every tensor that crosses a cut, and keep a wire log of what crossed.

A party hands a channel a *detached* tensor; the channel validates it, records it in the
:class:`WireLog` (cut, direction, phase, epoch, step, shape, dtype, bytes) and delivers a copy.
The receiving party re-attaches it (``requires_grad_``) so autograd never flows across a cut
except through the explicit gradient message going the other way.

The wire log counts bytes for every message and keeps tensors only when a capture policy asks
for them (bounded memory); captured tensors carry the sample ids of their batch so attacks,
ground truth and metrics stay aligned.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

from nopeek.errors import ChannelError

FORWARD = "forward"
BACKWARD = "backward"
DIRECTIONS = (FORWARD, BACKWARD)


@dataclass(frozen=True)
class WireRecord:
    """Metadata of one message that crossed a cut."""

    cut: str
    direction: str  # "forward" (activation) or "backward" (gradient)
    phase: str  # "train", "eval" or "inference"
    epoch: int
    step: int
    shape: tuple[int, ...]
    dtype: str
    nbytes: int


@dataclass
class Capture:
    """A recorded message: its metadata, a copy of the tensor, and the batch's sample ids."""

    record: WireRecord
    tensor: Tensor  # (N, ...) on CPU
    ids: Tensor | None  # (N,) int64


CapturePolicy = Callable[[WireRecord], bool]


@dataclass
class WireLog:
    """Everything that crossed the channel: records of all messages, tensors of chosen ones.

    ``capture`` decides which messages keep their tensor (default: none), so memory stays
    bounded however long training runs.
    """

    capture: CapturePolicy | None = None
    records: list[WireRecord] = field(default_factory=list)
    captures: list[Capture] = field(default_factory=list)
    phase: str = "train"
    epoch: int = 0
    step: int = 0

    def at(self, *, phase: str | None = None, epoch: int | None = None, step: int | None = None):
        """Set the position that the next messages are recorded at."""
        if phase is not None:
            self.phase = phase
        if epoch is not None:
            self.epoch = epoch
        if step is not None:
            self.step = step

    def record(self, tensor: Tensor, *, cut: str, direction: str, ids: Tensor | None) -> None:
        """Log one message (and keep its tensor if the capture policy asks for it)."""
        rec = WireRecord(
            cut=cut,
            direction=direction,
            phase=self.phase,
            epoch=self.epoch,
            step=self.step,
            shape=tuple(tensor.shape),
            dtype=str(tensor.dtype).removeprefix("torch."),
            nbytes=tensor.numel() * tensor.element_size(),
        )
        self.records.append(rec)
        if self.capture is not None and self.capture(rec):
            kept_ids = None if ids is None else ids.detach().cpu().clone()
            self.captures.append(Capture(rec, tensor.detach().cpu().clone(), kept_ids))

    def bytes_by(self, *, direction: str, phase: str = "train") -> dict[int, int]:
        """Bytes sent in ``direction`` during ``phase``, per epoch: ``{epoch: bytes}``."""
        out: dict[int, int] = defaultdict(int)
        for r in self.records:
            if r.direction == direction and r.phase == phase:
                out[r.epoch] += r.nbytes
        return dict(out)

    def captured(self, *, cut: str, direction: str, phase: str | None = None) -> list[Capture]:
        """The captured messages at ``cut`` in ``direction`` (and ``phase``), in send order."""
        return [
            c
            for c in self.captures
            if c.record.cut == cut
            and c.record.direction == direction
            and (phase is None or c.record.phase == phase)
        ]


class Channel(ABC):
    """Carries tensors across cuts between parties. Every message goes through :meth:`send`."""

    def __init__(self, log: WireLog | None = None) -> None:
        self.log = log if log is not None else WireLog()

    def send(
        self, tensor: Tensor, *, cut: str, direction: str, ids: Tensor | None = None
    ) -> Tensor:
        """Send ``tensor`` across ``cut``; returns the tensor as the receiver gets it.

        Refuses a tensor that still carries autograd history: a cut must be a hard boundary.
        """
        if direction not in DIRECTIONS:
            raise ChannelError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if tensor.requires_grad or tensor.grad_fn is not None:
            raise ChannelError(
                f"tensor sent across cut {cut!r} carries autograd history; send tensor.detach()"
            )
        self.log.record(tensor, cut=cut, direction=direction, ids=ids)
        return self._deliver(tensor, cut=cut, direction=direction)

    @abstractmethod
    def _deliver(self, tensor: Tensor, *, cut: str, direction: str) -> Tensor:
        """Move the tensor to the receiving party."""


class InProcessChannel(Channel):
    """Both parties live in this process: delivery is a copy, so neither side aliases the other."""

    def _deliver(self, tensor: Tensor, *, cut: str, direction: str) -> Tensor:
        return tensor.clone()
