"""Compressors at the cut: message transforms on either direction, counted on the wire.

A party compresses what it sends after its hooks (defenses) and before its channel, so the wire
log, the byte counters and the distributed wire all carry the compressed form; the receiver
decodes before use, and what attacks observe is the decoded message (what the receiver saw).
Configured as ``TrainConfig(compress="forward=topk:0.1,backward=int8")`` or ``--compress``
(:mod:`.spec`); every compressor has one interface (:class:`Compressor`: ``encode``,
``decode``, ``nbytes``, ``compress``).

>>> import torch
>>> c = parse_compressor("int4")
>>> x = torch.tensor([[0.0, 1.5, -0.5, 3.0]])
>>> c.encode(x).numel() == c.nbytes((1, 4), torch.float32) == 4 + 1 + 2
True
"""

from __future__ import annotations

from nopeek.compress.base import Compressor, Packed
from nopeek.compress.quantize import BFloat16, Float16, Int4, Int8, pack4, unpack4
from nopeek.compress.sparse import RandomK, TopK, kept
from nopeek.compress.spec import (
    COMPRESSORS,
    by_kind,
    canonical,
    family,
    for_party,
    parse_compress,
    parse_compressor,
)

__all__ = [
    "COMPRESSORS",
    "BFloat16",
    "Compressor",
    "Float16",
    "Int4",
    "Int8",
    "Packed",
    "RandomK",
    "TopK",
    "by_kind",
    "canonical",
    "family",
    "for_party",
    "kept",
    "pack4",
    "parse_compress",
    "parse_compressor",
    "unpack4",
]
