"""Typed messages between parties, the channels that carry them, and the wire log.

Everything that crosses a party boundary is a :class:`Message`: its ``kind`` (an ``activation``
going forward across a cut, the ``gradient`` coming back, a segment's ``weights`` handed to
another party), the ``cut`` it belongs to, ``sender`` and ``receiver``, the ``step`` it was sent
at, the batch's sample ``ids`` and one detached ``tensor``. A party hands a channel a message;
the channel validates it, records it in the :class:`WireLog` and delivers a copy. The receiver
names what it expects (sender, kind, cut, step) and gets exactly that message or a
:class:`~nopeek.errors.ChannelError`; it re-attaches the tensor (``requires_grad_``) so autograd
never flows across a cut except through the explicit gradient message going the other way.

A compressed message (see :mod:`nopeek.compress`) carries its encoded payload as ``tensor`` (a
flat ``uint8`` tensor) and in ``packed`` how it decodes (the compressor, the decoded shape and
dtype); :meth:`Message.value` is what the receiver uses.

The wire log counts bytes for every message (a compressed one: its payload) and keeps tensors
only when a capture policy asks for them (bounded memory); captured tensors are what the
receiver saw (decoded) and carry the sample ids of their batch so attacks, ground truth and
metrics stay aligned.
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Protocol

from torch import Tensor

from nopeek.errors import ChannelError

if TYPE_CHECKING:  # nopeek.compress.base, not the package: its spec imports this module
    from nopeek.compress.base import Packed

FORWARD = "forward"
BACKWARD = "backward"
RELAY = "relay"
DIRECTIONS = (FORWARD, BACKWARD, RELAY)

ACTIVATION = "activation"
GRADIENT = "gradient"
WEIGHTS = "weights"
KINDS = {ACTIVATION: FORWARD, GRADIENT: BACKWARD, WEIGHTS: RELAY}  # kind -> direction


@dataclass(frozen=True)
class Message:
    """One typed message from ``sender`` to ``receiver``.

    ``tensor``: (N, ...) for activations and gradients (N = len(ids)); a flat (P,) vector of a
    segment's state for weights. ``step`` numbers the sender's schedule position, so the
    receiver can check it got the message it expects. ``packed``: set on a compressed message,
    whose ``tensor`` is then the payload (B,) uint8 that ``packed`` decodes.
    """

    kind: str
    cut: str
    sender: str
    receiver: str
    step: int
    tensor: Tensor
    ids: Tensor | None = None
    packed: Packed | None = None

    @property
    def direction(self) -> str:
        return KINDS[self.kind]

    def value(self) -> Tensor:
        """The tensor the message stands for: ``tensor``, decoded if it is compressed."""
        return self.tensor if self.packed is None else self.packed.decode(self.tensor)


@dataclass(frozen=True)
class WireRecord:
    """Metadata of one message that crossed a party boundary."""

    cut: str
    direction: str  # "forward" (activation), "backward" (gradient) or "relay" (weights)
    phase: str  # "train", "eval" or "inference"
    epoch: int
    step: int
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    sender: str = ""
    receiver: str = ""
    kind: str = ""
    codec: str = ""  # the compressor's spec ("" uncompressed); shape and dtype are decoded ones

    def row(self) -> tuple[Any, ...]:
        """The fields in order, as a checkpoint stores them (``WireRecord(*row)`` is this record
        again); a shallow copy, unlike ``dataclasses.astuple``, which recursed into every field
        and made each epoch's checkpoint of a long run cost seconds.

        >>> r = WireRecord("conv2", "forward", "train", 0, 3, (64, 8), "float32", 2048)
        >>> WireRecord(*r.row()) == r
        True
        """
        return _ROW(self)


_ROW = operator.attrgetter(*(f.name for f in fields(WireRecord)))  # one C call for all fields


@dataclass
class Capture:
    """A recorded message: its metadata, a copy of the tensor as the receiver uses it (decoded),
    and the batch's sample ids."""

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

    def at(
        self, *, phase: str | None = None, epoch: int | None = None, step: int | None = None
    ) -> None:
        """Set the position that the next messages are recorded at."""
        if phase is not None:
            self.phase = phase
        if epoch is not None:
            self.epoch = epoch
        if step is not None:
            self.step = step

    def record(self, msg: Message) -> None:
        """Log one message (and keep its tensor, decoded, if the capture policy asks for it)."""
        tensor, packed = msg.tensor, msg.packed
        rec = WireRecord(
            cut=msg.cut,
            direction=msg.direction,
            phase=self.phase,
            epoch=self.epoch,
            step=self.step,
            shape=tuple(tensor.shape) if packed is None else tuple(packed.shape),
            dtype=str(tensor.dtype if packed is None else packed.dtype).removeprefix("torch."),
            nbytes=tensor.numel() * tensor.element_size(),
            sender=msg.sender,
            receiver=msg.receiver,
            kind=msg.kind,
            codec="" if packed is None else packed.codec.spec(),
        )
        self.records.append(rec)
        if self.capture is not None and msg.kind != WEIGHTS and self.capture(rec):
            kept_ids = None if msg.ids is None else msg.ids.detach().cpu().clone()
            seen = msg.value().detach().cpu().clone()
            self.captures.append(Capture(rec, seen, kept_ids))

    def captured(self, *, cut: str, direction: str, phase: str | None = None) -> list[Capture]:
        """The captured messages at ``cut`` in ``direction`` (and ``phase``), in send order."""
        return [
            c
            for c in self.captures
            if c.record.cut == cut
            and c.record.direction == direction
            and (phase is None or c.record.phase == phase)
        ]


def check_message(msg: Message) -> None:
    """Refuse malformed messages: unknown kind, a tensor still carrying autograd history, or a
    compressed payload whose length is not its compressor's for the decoded shape."""
    if msg.kind not in KINDS:
        raise ChannelError(f"message kind must be one of {sorted(KINDS)}, got {msg.kind!r}")
    if msg.tensor.requires_grad or msg.tensor.grad_fn is not None:
        raise ChannelError(
            f"{msg.kind} sent by {msg.sender} across cut {msg.cut!r} carries autograd history; "
            "send tensor.detach()"
        )
    if msg.packed is not None:
        msg.packed.codec.check_length(msg.tensor, msg.packed.shape, msg.packed.dtype)


class Channel(ABC):
    """Carries messages between parties. Every message goes through :meth:`post`.

    Subclasses deliver (:meth:`_deliver`) and receive (:meth:`recv`); the in-process channel
    queues copies, a distributed channel would put a header and the tensor on the wire.
    """

    def __init__(self, log: WireLog | None = None) -> None:
        self.log = log if log is not None else WireLog()

    def post(self, msg: Message) -> None:
        """Validate, record and deliver ``msg``."""
        check_message(msg)
        self.log.record(msg)
        self._deliver(msg)

    def send(
        self, tensor: Tensor, *, cut: str, direction: str, ids: Tensor | None = None
    ) -> Tensor:
        """Two-party shorthand: send ``tensor`` across ``cut`` and return it as received.

        Refuses a tensor that still carries autograd history: a cut must be a hard boundary.
        """
        if direction not in (FORWARD, BACKWARD):
            raise ChannelError(f"direction must be one of {FORWARD}, {BACKWARD}; got {direction!r}")
        kind = ACTIVATION if direction == FORWARD else GRADIENT
        ends = ("a", "b") if direction == FORWARD else ("b", "a")
        self.post(Message(kind, cut, *ends, self.log.step, tensor, ids))
        return self.recv(sender=ends[0], receiver=ends[1], kind=kind, cut=cut).value()

    @abstractmethod
    def _deliver(self, msg: Message) -> None:
        """Move the message towards its receiver."""

    @abstractmethod
    def recv(
        self, *, sender: str, receiver: str, kind: str, cut: str, step: int | None = None
    ) -> Message:
        """The next message from ``sender`` to ``receiver``; it must be the expected one."""


class TextChannel(Protocol):
    """The JSON text messages of a distributed channel (``torch.distributed`` or gRPC): the
    handshake, the alignment and the label party's gathering of metrics use them."""

    header_bytes: int
    payload_bytes: int
    text_bytes_received: tuple[int, int]  # (wire, payload) of the texts received

    def send_text(self, kind: str, receiver: str, text: str, *, step: int = 0) -> None:
        """Send ``text`` (a message of ``kind``) to ``receiver``."""

    def recv_text(self, sender: str, kind: str = ...) -> Any:
        """The next text of ``kind`` from ``sender``, parsed as JSON."""


class InProcessChannel(Channel):
    """All parties live in this process: one FIFO queue per (sender, receiver) pair.

    Delivery is a copy, so neither side aliases the other's tensors.
    """

    def __init__(self, log: WireLog | None = None) -> None:
        super().__init__(log)
        self._queues: dict[tuple[str, str], deque[Message]] = defaultdict(deque)
        self._pending = 0  # messages queued: counted, so a check costs nothing per queue

    def _deliver(self, msg: Message) -> None:
        ids = None if msg.ids is None else msg.ids.clone()
        copy = replace(msg, tensor=msg.tensor.clone(), ids=ids)
        self._queues[(msg.sender, msg.receiver)].append(copy)
        self._pending += 1

    def recv(
        self, *, sender: str, receiver: str, kind: str, cut: str, step: int | None = None
    ) -> Message:
        queue = self._queues.get((sender, receiver))
        if not queue:
            raise ChannelError(
                f"{receiver} expected a {kind} at cut {cut!r} from {sender}, but none was sent"
            )
        msg = queue.popleft()
        self._pending -= 1
        got = (msg.kind, msg.cut, msg.step if step is not None else None)
        want = (kind, cut, step)
        if got != want:
            raise ChannelError(
                f"{receiver} expected {kind} at cut {cut!r} (step {step}) from {sender}, "
                f"got {msg.kind} at cut {msg.cut!r} (step {msg.step})"
            )
        return msg

    def pending(self) -> int:
        """Messages sent but not yet received (0 after a complete step)."""
        return self._pending
