"""What every compressor at the cut shares: one interface, an encoded payload, a header tag.

A :class:`Compressor` turns a message ``x`` (N, ...) into a payload of bytes (a flat ``uint8``
tensor) and back: :meth:`~Compressor.encode` / :meth:`~Compressor.decode` are stateless and
exact inverses of each other's format, :meth:`~Compressor.nbytes` says how long the payload of a
given shape is (the receiver allocates exactly that, after its header was checked), and
:meth:`~Compressor.compress` is what a sending party calls: the stateless encoding plus whatever
the compressor keeps per stream (the error-feedback residual of top-k, the generator of
random-k). Each compressor is one row of a sample at a time: a sample's payload never depends
on the other samples of its batch.

The header of a compressed message (:mod:`nopeek.runtime.wire`) carries the decoded shape and
dtype, and the compressor's :attr:`~Compressor.tag`: its family in the high 32 bits and a CRC-32
of its canonical spec in the low ones, so a receiver configured otherwise refuses it in one line
before it allocates anything.
"""

from __future__ import annotations

import copy
import math
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from nopeek.errors import ChannelError, ConfigError


@dataclass(frozen=True)
class Packed:
    """How a message's payload decodes: by ``codec`` into a tensor of ``shape`` and ``dtype``."""

    codec: Compressor
    shape: tuple[int, ...]
    dtype: torch.dtype

    def decode(self, payload: Tensor) -> Tensor:
        return self.codec.decode(payload, self.shape, self.dtype)


def rows(x: Tensor) -> Tensor:
    """``x``: (N, ...) -> (N, D), one row per sample (D = 1 for a vector of N values)."""
    return x.reshape(len(x), -1)


def row_size(shape: tuple[int, ...]) -> int:
    """D, the values of one sample of a message of ``shape`` (N, ...)."""
    return math.prod(shape[1:]) if len(shape) > 1 else 1


def as_bytes(*parts: Tensor) -> Tensor:
    """The parts' raw bytes, concatenated: a flat ``uint8`` tensor."""
    return torch.cat([p.contiguous().reshape(-1).view(torch.uint8) for p in parts])


def take(payload: Tensor, offset: int, count: int, dtype: torch.dtype) -> tuple[Tensor, int]:
    """``count`` values of ``dtype`` at byte ``offset`` of ``payload`` (a copy: aligned), and the
    offset after them."""
    end = offset + count * dtype.itemsize
    return payload[offset:end].clone().view(dtype), end


class Compressor:
    """Base class: spec options, the payload format, the per-stream state of a sending party.

    Subclasses set ``name``, ``code`` (the family number in headers), ``options`` (spec key ->
    ``float`` or ``bool``), ``positional`` (the key a bare first value sets) and implement
    :meth:`encode`, :meth:`decode` and :meth:`nbytes`.
    """

    name: ClassVar[str] = ""
    code: ClassVar[int] = 0
    options: ClassVar[dict[str, str]] = {}
    positional: ClassVar[str | None] = None
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        self.party = ""
        self.kind = ""

    # --- identity ----------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The resolved options, positional one first."""
        return {}

    def spec(self) -> str:
        """The canonical spec: the positional value bare, other options only where they differ
        from their default.

        >>> from nopeek.compress import TopK
        >>> TopK(ratio=0.1).spec(), TopK(ratio=0.1, feedback=False).spec()
        ('topk:0.1', 'topk:0.1,feedback=false')
        """
        items = []
        for key, value in self.params().items():
            if key == self.positional:
                items.append(_fmt(value))
            elif value != self.defaults.get(key):
                items.append(f"{key}={_fmt(value)}")
        return self.name + (":" + ",".join(items) if items else "")

    @property
    def tag(self) -> int:
        """What a header says of this compressor: ``code << 32 | crc32(spec)`` (never 0)."""
        return self.code << 32 | zlib.crc32(self.spec().encode())

    def __repr__(self) -> str:
        return f"<compressor {self.spec()}>"

    # --- the payload -----------------------------------------------------------------------
    def nbytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        """Bytes of the payload of a message of ``shape`` (N, ...) and ``dtype``."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        """``x`` (N, ...) -> its payload, (nbytes,) ``uint8``; no state is read or changed."""
        raise NotImplementedError

    def decode(self, payload: Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """A payload -> the tensor (``shape``, ``dtype``) the receiver uses. A payload of the
        wrong length or with values outside its format is a one-line :class:`ChannelError`."""
        raise NotImplementedError

    def roundtrip(self, x: Tensor) -> Tensor:
        """What a receiver sees of ``x`` without any stream state: ``decode(encode(x))``."""
        return self.decode(self.encode(x), tuple(x.shape), x.dtype)

    def check_length(self, payload: Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        want = self.nbytes(shape, dtype)
        if payload.dtype != torch.uint8 or payload.dim() != 1 or payload.numel() != want:
            raise ChannelError(
                f"{self.spec()} payload for {tuple(shape)} {dtype} must be {want} bytes (uint8), "
                f"got {tuple(payload.shape)} {payload.dtype}"
            )

    # --- a sending party's streams ---------------------------------------------------------
    def bind(self, *, seed: int, party: str, kind: str) -> Compressor:
        """A fresh instance for what ``party`` sends as ``kind`` messages (its own state)."""
        bound = copy.deepcopy(self)
        bound.party, bound.kind = party, kind
        bound._setup(seed)
        return bound

    def _setup(self, seed: int) -> None:
        """Seed whatever the bound instance draws (random-k)."""

    def compress(self, x: Tensor, *, stream: str, training: bool) -> Tensor:
        """The payload a party sends for ``x`` (N, ...) on ``stream`` (its cut and receiver);
        ``training`` says whether it is a training message (state such as error feedback moves
        on training messages only)."""
        return self.encode(x)

    def state_dict(self) -> dict[str, Any]:
        """What must survive a checkpoint for ``--resume`` to give identical results."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def check_ratio(name: str, ratio: float) -> float:
    """A kept fraction in (0, 1], or a one-line :class:`ConfigError`."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise ConfigError(f"{name} keeps a fraction in (0, 1] of each sample, got {ratio!r}; "
                          f"e.g. {name}:0.1")  # fmt: skip
    return float(ratio)
