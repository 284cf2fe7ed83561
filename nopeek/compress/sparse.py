"""Sparsifiers: each sample keeps k of its D values, sent as (values, indices).

:class:`TopK` keeps the k largest magnitudes of each sample, :class:`RandomK` k coordinates
drawn uniformly (from the ``compress.random-k`` stream of :mod:`nopeek.seeding`, one generator
per party and message kind). ``k = ceil(ratio * D)`` (``ratio * D`` rounded to 6 decimals
first, so 0.1 of 80 is 8) and at least 1.

Error feedback (Stich, Cordonnier and Jaggi, "Sparsified SGD with memory", NeurIPS 2018): what
a message did not send is added to the next message of the same stream (the same cut, sender
and receiver), ``p_t = x_t + e_t``, ``e_{t+1} = p_t - C(p_t)``. A split-learning stream carries
another batch every step, so the residual is carried row by row (row i of the next batch gets
row i of the residual; rows the next batch lacks are dropped, rows it adds start at 0). It moves
on training messages only: evaluation and inference are compressed without it and leave it as
it is. On by default for top-k (``feedback=false`` turns it off), off for random-k.

Payload, for a message (N, ...) of dtype T: ``N * k`` values of T (row-major), then ``N * k``
int32 indices, ascending within each row: ``N * k * (T.itemsize + 4)`` bytes. A receiver refuses
indices outside ``0..D-1`` or not strictly ascending (a repeated one).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from nopeek.compress.base import Compressor, as_bytes, check_ratio, row_size, rows, take
from nopeek.errors import ChannelError
from nopeek.seeding import generator


def kept(ratio: float, d: int) -> int:
    """k of a sample of ``d`` values: ``ceil(ratio * d)``, at least 1, at most ``d``.

    >>> kept(0.1, 80), kept(0.1, 512), kept(0.001, 10)
    (8, 52, 1)
    """
    return min(d, max(1, math.ceil(round(ratio * d, 6))))


class _Sparsifier(Compressor):
    options = {"ratio": "float", "feedback": "bool"}
    positional = "ratio"

    def __init__(self, *, ratio: float, feedback: bool) -> None:
        super().__init__()
        self.ratio = check_ratio(self.name, ratio)
        self.feedback = bool(feedback)
        self._residual: dict[str, Tensor] = {}

    def params(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "feedback": self.feedback}

    def nbytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        return shape[0] * kept(self.ratio, row_size(shape)) * (dtype.itemsize + 4)

    def _choose(self, r: Tensor, k: int) -> Tensor:
        """The k coordinates (N, k) each row of ``r`` (N, D) keeps."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        r = rows(x)
        idx = self._choose(r, kept(self.ratio, r.shape[1])).sort(dim=1).values
        return as_bytes(r.gather(1, idx), idx.to(torch.int32))

    def decode(self, payload: Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        self.check_length(payload, shape, dtype)
        n, d = shape[0], row_size(shape)
        k = kept(self.ratio, d)
        values, at = take(payload, 0, n * k, dtype)
        idx = take(payload, at, n * k, torch.int32)[0].reshape(n, k).long()
        if ((idx[:, 0] < 0) | (idx[:, -1] >= d)).any() or (idx.diff(dim=1) <= 0).any():
            raise ChannelError(
                f"{self.spec()} payload has indices outside 0..{d - 1} or not strictly "
                "ascending in a row; the sender is not a nopeek party of this run"
            )
        out = torch.zeros(n, d, dtype=dtype, device=payload.device)
        return out.scatter_(1, idx, values.reshape(n, k)).reshape(shape)

    def compress(self, x: Tensor, *, stream: str, training: bool) -> Tensor:
        if not (self.feedback and training):
            return self.encode(x)
        p = x + self._carried(stream, x) if stream in self._residual else x
        payload = self.encode(p)
        self._residual[stream] = p - self.decode(payload, tuple(p.shape), p.dtype)
        return payload

    def _carried(self, stream: str, x: Tensor) -> Tensor:
        """The stream's residual, row-aligned with ``x``."""
        e = self._residual[stream]
        if e.shape == x.shape:
            return e
        out = torch.zeros_like(x)
        m = min(len(e), len(x))
        if e.shape[1:] == x.shape[1:]:
            out[:m] = e[:m]
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"residual": dict(self._residual)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._residual = dict(state.get("residual", {}))


class TopK(_Sparsifier):
    """Keep the ``ratio`` largest magnitudes of each sample; error feedback on by default.

    >>> import torch
    >>> c = TopK(ratio=0.5)
    >>> c.roundtrip(torch.tensor([[1.0, -4.0, 2.0, 0.5]])).tolist()
    [[0.0, -4.0, 2.0, 0.0]]
    """

    name = "topk"
    code = 1
    defaults = {"feedback": True}

    def __init__(self, *, ratio: float, feedback: bool = True) -> None:
        super().__init__(ratio=ratio, feedback=feedback)

    def _choose(self, r: Tensor, k: int) -> Tensor:
        return r.abs().topk(k, dim=1, sorted=False).indices


class RandomK(_Sparsifier):
    """Keep ``ratio`` of each sample's coordinates, drawn uniformly; no error feedback unless
    ``feedback=true``. A party's draws come from its own seeded generator."""

    name = "randk"
    code = 2
    defaults = {"feedback": False}

    def __init__(self, *, ratio: float, feedback: bool = False) -> None:
        super().__init__(ratio=ratio, feedback=feedback)
        self._generator: torch.Generator | None = None

    def _setup(self, seed: int) -> None:
        self._generator = generator(seed, "compress.random-k", self.party, self.kind)

    def _choose(self, r: Tensor, k: int) -> Tensor:
        if self._generator is None:  # an unbound instance (an attacker's query): seed 0
            self._setup(0)
        keys = torch.rand(r.shape, generator=self._generator)  # on the CPU: any device agrees
        return keys.topk(k, dim=1, sorted=False).indices.to(r.device)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self._generator is not None:
            state["generator"] = self._generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "generator" in state:
            if self._generator is None:
                self._setup(0)
            assert self._generator is not None  # made by _setup
            self._generator.set_state(state["generator"])
