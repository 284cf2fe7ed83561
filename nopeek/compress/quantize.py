"""Quantisers and casts: each value sent in fewer bits.

:class:`Int8` and :class:`Int4` quantise each sample on its own (asymmetric affine, as
``torch.quantize_per_channel`` with the batch as the channel axis): its range ``[lo, hi]``,
widened to hold 0 so that 0 is sent exactly (ReLU zeros stay zeros), is cut into ``2**bits - 1``
steps of ``scale = (hi - lo) / (2**bits - 1)`` (1 for a row of zeros), with the integer
``zero_point = round(-lo / scale)`` standing for 0; a value is sent as ``q = clamp(round(x /
scale) + zero_point, 0, 2**bits - 1)`` and read back as ``(q - zero_point) * scale``, within
``scale / 2`` of what was sent. The arithmetic is written out on plain ``uint8`` tensors:
torch's quantised dtypes and the functions producing them (``quantize_per_channel``) are
deprecated since PyTorch 2.13 (pytorch/pytorch#184982), and no torch function packs 4-bit codes
of a per-sample scheme; the tests compare with torch's own affine quantisation.

Payload of a message (N, ...) with D values a sample: N float32 scales, N uint8 zero points,
then the codes: N * D bytes (int8) or N * ceil(D / 2) bytes (int4: two codes a byte, the even
column in the low nibble; an odd row is padded with a 0 code).

:class:`Float16` and :class:`BFloat16` cast each value (``N * D * 2`` bytes); the receiver casts
back to the message's dtype.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from nopeek.compress.base import Compressor, as_bytes, row_size, rows, take
from nopeek.errors import ChannelError


def pack4(codes: Tensor) -> Tensor:
    """Codes (N, D) in 0..15 (uint8) -> (N, ceil(D / 2)) bytes, two codes a byte.

    >>> import torch
    >>> pack4(torch.tensor([[1, 2, 3]], dtype=torch.uint8)).tolist()
    [[33, 3]]
    """
    if codes.shape[1] % 2:
        codes = F.pad(codes, (0, 1))
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def unpack4(packed: Tensor, d: int) -> Tensor:
    """Inverse of :func:`pack4`: (N, ceil(d / 2)) bytes -> codes (N, d)."""
    return torch.stack([packed & 15, packed >> 4], dim=2).reshape(len(packed), -1)[:, :d]


class _Affine(Compressor):
    bits: ClassVar[int] = 8

    def __init__(self) -> None:
        super().__init__()

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1

    def _code_bytes(self, d: int) -> int:
        return d if self.bits == 8 else math.ceil(d / 2)

    def nbytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        return shape[0] * (4 + 1 + self._code_bytes(row_size(shape)))

    def quantize(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` (N, ...) -> codes (N, D) uint8, scales (N,) float32, zero points (N,) uint8."""
        r = rows(x).float()
        lo, hi = r.min(dim=1).values.clamp(max=0), r.max(dim=1).values.clamp(min=0)
        scale = (hi - lo) / self.qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero = torch.round(-lo / scale).clamp(0, self.qmax)
        codes = (torch.round(r / scale[:, None]) + zero[:, None]).clamp(0, self.qmax)
        return codes.to(torch.uint8), scale, zero.to(torch.uint8)

    def encode(self, x: Tensor) -> Tensor:
        codes, scale, zero = self.quantize(x)
        return as_bytes(scale, zero, codes if self.bits == 8 else pack4(codes))

    def decode(self, payload: Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        self.check_length(payload, shape, dtype)
        n, d = shape[0], row_size(shape)
        scale, at = take(payload, 0, n, torch.float32)
        zero, at = take(payload, at, n, torch.uint8)
        if not (torch.isfinite(scale).all() and (scale > 0).all() and (zero <= self.qmax).all()):
            raise ChannelError(
                f"{self.spec()} payload has a scale that is not a finite number > 0 or a zero "
                f"point above {self.qmax}; the sender is not a nopeek party of this run"
            )
        codes = payload[at:].reshape(n, -1)
        codes = codes if self.bits == 8 else unpack4(codes, d)
        out = (codes.float() - zero.float()[:, None]) * scale[:, None]
        return out.to(dtype).reshape(shape)


class Int8(_Affine):
    """8-bit codes, one scale and zero point a sample.

    >>> import torch
    >>> Int8().roundtrip(torch.tensor([[0.0, -3.0, 252.0]])).tolist()
    [[0.0, -3.0, 252.0]]
    >>> Int8().nbytes((64, 32, 4, 4), torch.float32)  # 64 * (4 + 1 + 512)
    33088
    """

    name = "int8"
    code = 3
    bits = 8


class Int4(_Affine):
    """4-bit codes (two a byte), one scale and zero point a sample."""

    name = "int4"
    code = 4
    bits = 4


class _Cast(Compressor):
    to: ClassVar[torch.dtype] = torch.float16

    def __init__(self) -> None:
        super().__init__()

    def nbytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        return math.prod(shape) * self.to.itemsize

    def encode(self, x: Tensor) -> Tensor:
        return as_bytes(x.to(self.to))

    def decode(self, payload: Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        self.check_length(payload, shape, dtype)
        return take(payload, 0, math.prod(shape), self.to)[0].reshape(shape).to(dtype)


class Float16(_Cast):
    """IEEE half precision (values beyond 65504 become inf, as ``Tensor.half()`` does)."""

    name = "fp16"
    code = 5
    to = torch.float16


class BFloat16(_Cast):
    """bfloat16: float32's range, 8 bits of mantissa."""

    name = "bf16"
    code = 6
    to = torch.bfloat16
