"""Hand-made wire headers, shared by the wire tests and the distributed receiver test."""

from __future__ import annotations

import torch

from nopeek.runtime import wire
from nopeek.runtime.channel import ACTIVATION

HEADER_BYTES = 16 * 8  # the fixed header: 16 int64 values


def _raw(**fields) -> torch.Tensor:
    """A header for an activation (3, 16, 4, 4) float32 with 3 ids, fields replaced by name."""
    good = wire.encode(ACTIVATION, 0, 0, 5, torch.zeros(3, 16, 4, 4), 3, "cpu").tolist()
    where = {"magic": 0, "version": 1, "kind": 2, "cut": 3, "sender": 4, "step": 5}
    where |= {"dtype": 6, "ndim": 7, "n_ids": 14} | {f"d{i}": 8 + i for i in range(6)}
    for name, value in fields.items():
        good[where[name]] = value
    return torch.tensor(good, dtype=torch.int64)


def _shape(*dims: int) -> dict:
    return {"ndim": len(dims)} | {f"d{i}": d for i, d in enumerate(dims)}


# what the distributed receiver test's sender sends, headers alone -> what the receiver says
BAD_HEADERS = {
    "huge batch": (
        _raw(step=1, n_ids=10**12, **_shape(10**12, 16, 4, 4)),  # 1 PB of float32 announced
        r"message from client: field shape has a batch of 1000000000000, expected 1\.\.64",
    ),
    "wrong dtype": (
        _raw(step=2, dtype=wire.DTYPE_CODES[torch.uint8]),
        r"message from client: field dtype is torch\.uint8",
    ),
    "ids": (
        _raw(step=3, n_ids=4),
        r"message from client: field n_ids is 4, expected one per row \(3\)",
    ),
    "huge shape": (
        _raw(step=4, n_ids=10**12, **_shape(10**12, 32, 4, 4)),
        r"message from client: field shape is \(1000000000000, 32, 4, 4\), expected \(N, 16",
    ),
}
