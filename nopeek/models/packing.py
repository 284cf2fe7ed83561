"""One tensor per cut: pack what a skip-crossed cut carries, unpack it on the other side.

A cut that a skip connection crosses carries several tensors (the segment before returns a
tuple, see :mod:`nopeek.models.fx_split`). A party sends one message per cut, so for training
the tuple travels as **one** tensor, and every party, defense, wire record and attack sees
exactly what crosses:

- tensors of the same spatial size ``(N, C_i, *S)`` are concatenated along the channel
  dimension, ``(N, sum C_i, *S)``, which keeps the layout a convolutional decoder expects;
- otherwise each is flattened and the rows concatenated, ``(N, sum prod(shape_i))``.

The receiving segment splits the message back by the shapes both sides know from the
architecture (a :class:`Layout`, measured once on a dry run). Packing copies values and adds no
bytes: the message's payload is the sum of the carried tensors' payloads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nopeek.errors import CutError


@dataclass(frozen=True)
class Layout:
    """The shapes (apart from the batch) of the tensors one cut carries, and how they pack."""

    shapes: tuple[tuple[int, ...], ...]
    channels: bool  # same spatial size: concatenate along dim 1; else flatten and concatenate

    @classmethod
    def of(cls, values: Sequence[Tensor], cut: str = "?") -> Layout:
        """The layout of ``values`` (several ``(N, ...)`` tensors of one floating dtype).

        >>> Layout.of([torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, 4, 4)]).channels
        True
        """
        dtypes = {v.dtype for v in values}
        if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
            raise CutError(
                f"cut {cut!r} carries tensors of dtypes {sorted(map(str, dtypes))}; a cut that "
                "several tensors cross must carry floating tensors of one dtype: pick another cut"
            )
        shapes = tuple(tuple(v.shape[1:]) for v in values)
        spatial = {s[1:] for s in shapes}
        return cls(shapes, all(len(s) >= 2 for s in shapes) and len(spatial) == 1)

    @property
    def sizes(self) -> list[int]:
        """Each tensor's extent in the packed dimension 1."""
        return [s[0] for s in self.shapes] if self.channels else [math.prod(s) for s in self.shapes]

    @property
    def packed_shape(self) -> tuple[int, ...]:
        """The packed message's shape apart from the batch."""
        if self.channels:
            return (sum(self.sizes), *self.shapes[0][1:])
        return (sum(self.sizes),)

    def pack(self, values: Sequence[Tensor]) -> Tensor:
        """Several ``(N, *shape_i)`` tensors -> one ``(N, *packed_shape)`` tensor."""
        if self.channels:
            return torch.cat(list(values), dim=1)
        return torch.cat([v.reshape(len(v), -1) for v in values], dim=1)

    def unpack(self, z: Tensor) -> tuple[Tensor, ...]:
        """Inverse of :meth:`pack`: tensors shaped like the carried ones. Each is made
        contiguous, as the segment's own tensors are, so the receiving segment computes exactly
        what it computes on the unpacked tuple (kernels may differ on strided inputs)."""
        parts = torch.split(z, self.sizes, dim=1)
        if self.channels:
            return tuple(p.contiguous() for p in parts)
        shapes = self.shapes
        return tuple(p.reshape(len(z), *s).contiguous() for p, s in zip(parts, shapes, strict=True))


class Packed(nn.Module):
    """``segment`` with its several-tensor input (``takes``) and/or output (``gives``) packed.

    The segment is held as a submodule (its parameters are the same objects), so training the
    wrapper trains the segment and the model it was cut from.

    >>> seg = Packed(nn.Identity(), gives=Layout(((2,), (3,)), channels=False))
    >>> seg.gives.pack([torch.ones(1, 2), torch.zeros(1, 3)]).shape
    torch.Size([1, 5])
    """

    def __init__(
        self, segment: nn.Module, *, takes: Layout | None = None, gives: Layout | None = None
    ) -> None:
        super().__init__()
        self.segment = segment
        self.takes = takes
        self.gives = gives

    def forward(self, *args: Tensor) -> Tensor:
        if self.takes is not None:
            if len(args) != 1:
                raise CutError(
                    f"a packed segment takes one message, got {len(args)} inputs; a node that "
                    "merges several inputs cannot read a cut that several tensors cross"
                )
            args = self.takes.unpack(args[0])
        out = self.segment(*args)
        return self.gives.pack(out) if self.gives is not None else out


def packed(module: nn.Module, takes: Layout | None, gives: Layout | None) -> nn.Module:
    """``module`` wrapped in :class:`Packed` when it takes or gives several tensors, else as is."""
    if takes is None and gives is None:
        return module
    return Packed(module, takes=takes, gives=gives)
