"""Hand-made wire headers, shared by the wire tests and the distributed receiver test."""

from __future__ import annotations

import torch

from nopeek.channel import ACTIVATION
from nopeek.runtime import wire

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
