"""The wire format of a distributed run: a fixed-size header, validated before any allocation.

Every message on a :class:`~nopeek.runtime.distributed.TorchDistributedChannel` is a header of
:data:`HEADER_LEN` int64 values followed by the tensor and, for activations and gradients, the
batch's sample ids (int64). The header says what follows::

    [magic, version, kind, cut, sender rank, step, dtype, ndim, d0 .. d5, n_ids, codec]

The receiver checks the header against what it :class:`Expect` s at that point of the schedule
(kind, cut, sender, step, allowed dtype, the shape apart from the batch dimension, a size
bound, the compressor) and only then allocates the buffers; anything else is a one-line
:class:`~nopeek.errors.ChannelError` naming the sender and the field.

A compressed message (:mod:`nopeek.compress`) has the same header with the *decoded* dtype and
shape, and in ``codec`` its compressor's tag (0: uncompressed); its body is the compressor's
payload, ``uint8`` of exactly the length the compressor computes from that shape, so it is
bounded by what the schedule expects. A receiver whose own compressor for that kind of message
has another tag refuses it before it allocates anything.

No pickled object ever crosses: two more kinds carry UTF-8 JSON text as bytes (``stats``:
counters gathered at the end; ``error``: a peer's last words), which the receiver parses as
data, never as code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from nopeek.compress import family
from nopeek.errors import ChannelError
from nopeek.runtime.channel import ACTIVATION, GRADIENT, WEIGHTS

if TYPE_CHECKING:
    from nopeek.compress import Packed

MAGIC = 0x4E4F5045  # "NOPE"
VERSION = 1
HEADER_LEN = 16
MAX_DIMS = 6
STATS = "stats"
ERROR = "error"
KIND_CODES = {ACTIVATION: 1, GRADIENT: 2, WEIGHTS: 3, STATS: 4, ERROR: 5}
KIND_NAMES = {v: k for k, v in KIND_CODES.items()}
DTYPE_CODES = {torch.float32: 1, torch.float64: 2, torch.float16: 3, torch.bfloat16: 4}
DTYPE_CODES |= {torch.int64: 5, torch.uint8: 6}
DTYPES = {v: k for k, v in DTYPE_CODES.items()}
FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
MAX_TEXT = 1 << 24  # bytes of a stats / error message (16 MiB)


@dataclass(frozen=True)
class Header:
    """A decoded header."""

    kind: str
    cut: int
    sender: int
    step: int
    dtype: torch.dtype
    shape: tuple[int, ...]
    n_ids: int
    codec: int = 0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Expect:
    """What the receiver accepts next: ``tail`` is the shape apart from the batch dimension
    (``None``: a flat vector of ``flat`` values), ``max_batch`` bounds the batch."""

    kind: str
    cut: int
    sender: int
    step: int
    tail: tuple[int, ...] | None = None
    flat: int | None = None
    max_batch: int = 0
    dtypes: tuple[torch.dtype, ...] = FLOATS
    codec: int = 0  # the tag of the receiver's compressor for this message (0: none)


def encode(
    kind: str,
    cut: int,
    sender: int,
    step: int,
    tensor: Tensor,
    n_ids: int,
    device: torch.device | str,
    packed: Packed | None = None,
) -> Tensor:
    """The header (HEADER_LEN,) int64 for ``tensor``, or for the compressed message whose
    payload it is (``packed``: a :class:`~nopeek.compress.Packed`)."""
    shape = tuple(tensor.shape) if packed is None else tuple(packed.shape)
    dtype = tensor.dtype if packed is None else packed.dtype
    if len(shape) > MAX_DIMS:
        raise ChannelError(f"cannot send a {len(shape)}-d tensor; at most {MAX_DIMS} dims")
    if dtype not in DTYPE_CODES:
        raise ChannelError(f"cannot send dtype {dtype}; use one of {list(DTYPE_CODES)}")
    dims = list(shape) + [0] * (MAX_DIMS - len(shape))
    codec = 0 if packed is None else packed.codec.tag
    values = [MAGIC, VERSION, KIND_CODES[kind], cut, sender, step]
    values += [DTYPE_CODES[dtype], len(shape), *dims, n_ids, codec]
    return torch.tensor(values, dtype=torch.int64, device=device)


def decode(raw: Tensor, *, sender_name: str) -> Header:
    """Parse a received header; malformed fields are a :class:`ChannelError` naming them."""
    v = [int(x) for x in raw.cpu().tolist()]
    who = f"message from {sender_name}"
    if v[0] != MAGIC or v[1] != VERSION:
        raise ChannelError(f"{who} is not a nopeek header (magic/version {v[0]:#x}/{v[1]})")
    if v[2] not in KIND_NAMES:
        raise ChannelError(f"{who} has an unknown kind code {v[2]}")
    if v[6] not in DTYPES:
        raise ChannelError(f"{who} has an unknown dtype code {v[6]}")
    ndim = v[7]
    if not 0 <= ndim <= MAX_DIMS:
        raise ChannelError(f"{who} has {ndim} dims (at most {MAX_DIMS})")
    shape = tuple(v[8 : 8 + ndim])
    if any(d < 0 for d in shape) or v[14] < 0:
        raise ChannelError(f"{who} has a negative size in its shape {shape} or id count {v[14]}")
    return Header(KIND_NAMES[v[2]], v[3], v[4], v[5], DTYPES[v[6]], shape, v[14], v[15])


def check(header: Header, want: Expect, *, sender_name: str, cut_name: str) -> None:
    """Refuse a header that is not the expected message, before anything is allocated."""
    who = f"message from {sender_name}"
    if header.kind != want.kind:
        article = "an" if want.kind[0] in "aeiou" else "a"
        raise ChannelError(
            f"{who}: expected {article} {want.kind} at cut {cut_name!r}, got {header.kind}"
        )
    if (header.cut, header.sender, header.step) != (want.cut, want.sender, want.step):
        raise ChannelError(
            f"{who}: field cut/sender/step is {header.cut}/{header.sender}/{header.step}, "
            f"expected {want.cut}/{want.sender}/{want.step} (the parties' schedules differ: "
            "start every party with the same flags)"
        )
    if header.dtype not in want.dtypes:
        raise ChannelError(f"{who}: field dtype is {header.dtype}, expected one of {want.dtypes}")
    if header.codec != want.codec:
        raise ChannelError(
            f"{who}: field codec is {_codec(header.codec)}, expected {_codec(want.codec)} at cut "
            f"{cut_name!r} (start every party with the same --compress)"
        )
    if want.tail is not None:
        if len(header.shape) != len(want.tail) + 1 or header.shape[1:] != want.tail:
            raise ChannelError(
                f"{who}: field shape is {header.shape}, expected (N, "
                f"{', '.join(map(str, want.tail))}) at cut {cut_name!r}"
            )
        if not 0 < header.shape[0] <= want.max_batch:
            raise ChannelError(
                f"{who}: field shape has a batch of {header.shape[0]}, expected 1..{want.max_batch}"
            )
        if header.n_ids != header.shape[0]:
            raise ChannelError(
                f"{who}: field n_ids is {header.n_ids}, expected one per row ({header.shape[0]})"
            )
        return
    if header.n_ids:  # only a batch (activations, gradients) carries sample ids
        raise ChannelError(
            f"{who}: field n_ids is {header.n_ids}, expected 0 for a {header.kind} message"
        )
    if want.flat is not None and header.shape != (want.flat,):
        raise ChannelError(f"{who}: field shape is {header.shape}, expected ({want.flat},)")
    elif want.flat is None and (len(header.shape) != 1 or header.numel > MAX_TEXT):
        raise ChannelError(
            f"{who}: field shape is {header.shape}, expected at most {MAX_TEXT} bytes"
        )


def _codec(tag: int) -> str:
    """A compressor tag as an error message names it: its family and the tag in hex."""
    return "none (uncompressed)" if tag == 0 else f"{family(tag)} (tag {tag:#x})"


def text_bytes(kind: str, text: str, *, sender: str) -> Tensor:
    """The body of a ``stats`` or ``error`` message: ``text`` as UTF-8, (B,) uint8.

    An error is cut to :data:`MAX_TEXT` bytes (a party's last words must still go out); a longer
    ``stats`` text is refused in one line, since the receiver would refuse it.

    >>> text_bytes(STATS, '{"a": 1}', sender="client").tolist()[:2]
    [123, 34]
    """
    raw = text.encode()
    if kind == ERROR:
        raw = raw[:MAX_TEXT]
    elif len(raw) > MAX_TEXT:
        raise ChannelError(
            f"{sender}'s {kind} message has {len(raw)} bytes, over the {MAX_TEXT} a receiver "
            "accepts; train with fewer steps per epoch (a larger --batch-size)"
        )
    return (
        torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        if raw
        else torch.zeros(0, dtype=torch.uint8)
    )
