"""Every random stream of nopeek, derived from the user's seed in one place.

A *stream* is one use of randomness (the test split, the batch order of client k in epoch e,
the noise of one defense at one party, ...). Each has a name in :data:`STREAMS`, the one table
that says who draws from it, which indices tell its instances apart, and how its seed comes from
the user's. Call sites ask for a stream by name, never derive a seed themselves::

    stream_seed(seed, "batches", epoch, client)         # an int, for whatever takes one
    generator(seed, "defense.noise", purpose, party, i)  # a torch.Generator
    numpy_rng(seed, "shards")                           # a numpy.random.Generator
    with seeded(seed, "model.init"): model = build()    # torch's global RNG, for one block

The core's streams are written here; a package above the core registers its own with
:func:`register_stream` from its ``streams`` module, which the package imports first
(``nopeek.attacks.streams``: ``attack.*``, ``nopeek.defenses.streams``: ``defense.*``,
``nopeek.eval.streams``: ``expertmatcher.*``), so the core names none of theirs and imports none
of them.

New streams use :func:`derive_seed` (:func:`derived`): NumPy's ``SeedSequence`` mixes the seed, a
CRC-32 of the stream's tag and the indices into an independent 32-bit seed, so streams never
overlap and a seed fixes a run, in one process or in many. The streams that predate the table
keep the formula they had (their magic constants are named once, next to the stream): results
of earlier releases reproduce, same seed, same numbers. An unknown name is a programming error
(``KeyError`` listing the names).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

Index = int | str  # a stream index: an int, or a string (hashed with CRC-32)
Entropy = int | np.random.SeedSequence  # what a stream's formula gives


def _tag(value: Index) -> int:
    return zlib.crc32(value.encode()) if isinstance(value, str) else int(value)


def derive_seed(seed: int, purpose: str, *index: Index) -> int:
    """An independent 32-bit seed for ``purpose`` (and ``index``) of the run seeded ``seed``.

    The default derivation of :data:`STREAMS`: ``SeedSequence([seed, crc32(purpose), *index])``,
    string indices hashed with CRC-32 too. Call sites use :func:`stream_seed` instead.

    >>> derive_seed(0, "segment", 1) == derive_seed(0, "segment", 1)
    True
    >>> derive_seed(0, "segment", 1) != derive_seed(0, "segment", 2)
    True
    """
    return int(_sequence(seed, _tag(purpose), *map(_tag, index)).generate_state(1)[0])


def _sequence(*entropy: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(list(entropy))


def first_word(*entropy: int) -> int:
    """The first 32-bit word of ``SeedSequence(entropy)``: a legacy formula's seed.

    >>> first_word(3, 1)  # data.test of seed 3
    457190280
    """
    return int(_sequence(*entropy).generate_state(1)[0])


def seed63(*entropy: int) -> int:
    """A 63-bit seed from the first two 32-bit words of ``SeedSequence(entropy)`` (the legacy
    formula of the defenses' noise streams)."""
    state = _sequence(*entropy).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


# --- the core's legacy formulas: each constant is named here once, so earlier results reproduce
DATA_PURPOSES = {"test": 1, "aux": 2, "max-train": 3, "shuffle-labels": 4}
"""data.*: ``SeedSequence([seed, purpose])``, first 32-bit word."""
BATCH_SEED_MUL, BATCH_CLIENT_MUL = 100_003, 7_919
"""batches: ``seed * 100_003 + epoch + 7_919 * client`` (two primes)."""
SHARD_TAG = 0x5A4D
"""shards: NumPy's generator on ``SeedSequence([seed, 0x5A4D])``."""
LEAKAGE_OFFSET = 1_000_003
"""leakage-sample: NumPy's generator seeded ``seed + 1_000_003``."""


def derived(tag: str) -> Callable[..., Entropy]:
    """The formula of a new stream: :func:`derive_seed` under ``tag`` (usually its name)."""
    return lambda seed, *index: derive_seed(seed, tag, *index)


def identity(seed: int) -> Entropy:
    """The legacy formula of streams that are the user's seed itself."""
    return seed


@dataclass(frozen=True)
class Stream:
    """One named stream: who draws from it, its indices, and its seed's formula.

    ``derive(seed, *index)`` gives an int seed or a ``SeedSequence`` (streams that were NumPy
    generators over a ``SeedSequence``); ``how`` says the formula in words.
    """

    consumer: str
    index: tuple[str, ...]
    how: str
    derive: Callable[..., Entropy]


STREAMS: dict[str, Stream] = {
    # --- the core: data, weights, batches --------------------------------------------------
    "data.test": Stream(
        "nopeek.data: the stratified test split of bundled and file data sets",
        (),
        "legacy: SeedSequence([seed, 1]), first word",
        lambda seed: first_word(seed, DATA_PURPOSES["test"]),
    ),
    "data.aux": Stream(
        "nopeek.data: the aux split (bundled/file sets; the 10% of a torchvision train set)",
        (),
        "legacy: SeedSequence([seed, 2]), first word",
        lambda seed: first_word(seed, DATA_PURPOSES["aux"]),
    ),
    "data.max-train": Stream(
        "nopeek.data: the stratified --max-train subset of the train split",
        (),
        "legacy: SeedSequence([seed, 3]), first word",
        lambda seed: first_word(seed, DATA_PURPOSES["max-train"]),
    ),
    "data.shuffle-labels": Stream(
        "nopeek.data: the permutation of train labels of --shuffle-labels",
        (),
        "legacy: SeedSequence([seed, 4]), first word",
        lambda seed: first_word(seed, DATA_PURPOSES["shuffle-labels"]),
    ),
    "data.aligned": Stream(
        "nopeek.data.party.aligned_splits: the train/test/aux split of samples keyed by id "
        "(--id-column: the aligned order, the same at every party)",
        (),
        "derive_seed(seed, 'data.aligned')",
        derived("data.aligned"),
    ),
    "data.aligned-max-train": Stream(
        "nopeek.data.party.aligned_splits: the --max-train subset of that train split",
        (),
        "derive_seed(seed, 'data.aligned-max-train')",
        derived("data.aligned-max-train"),
    ),
    "data.augment": Stream(
        "nopeek.data.bundled: the pixel shifts of the copies of digits-x10's training images",
        (),
        "derive_seed(seed, 'data.augment')",
        derived("data.augment"),
    ),
    "model.init": Stream(
        "nopeek.training.assemble, eval.fedavg: the initial weights of the whole model",
        (),
        "legacy: the seed itself (torch.manual_seed(seed))",
        identity,
    ),
    "model.segment": Stream(
        "nopeek.training.assemble: the other segments of a multi-party topology (client bottoms, "
        "heads)",
        ("index",),
        "derive_seed(seed, 'segment', index) (tag kept from before this table)",
        derived("segment"),
    ),
    "topology.init": Stream(
        "nopeek.training.assemble.build_topology: layers a topology adds itself (vertical's "
        "adapter from "
        "the merged cuts to the top)",
        (),
        "derive_seed(seed, 'topology.init')",
        derived("topology.init"),
    ),
    "batches": Stream(
        "nopeek.runtime.plans.batches: the batch order of one client in one epoch (trainer, "
        "FedAvg)",
        ("epoch", "client"),
        "legacy: seed * 100_003 + epoch + 7_919 * client",
        lambda seed, epoch, client: seed * BATCH_SEED_MUL + epoch + BATCH_CLIENT_MUL * client,
    ),
    "shards": Stream(
        "nopeek.runtime.plans.shard_indices: the IID / Dirichlet shards of many-clients, splitfed",
        (),
        "legacy: NumPy generator on SeedSequence([seed, 0x5A4D])",
        lambda seed: _sequence(seed, SHARD_TAG),
    ),
    "leakage-sample": Stream(
        "nopeek.training.measures.leakage_sample: the test sample dcor_test is measured on",
        (),
        "legacy: seed + 1_000_003",
        lambda seed: seed + LEAKAGE_OFFSET,
    ),
    # --- compressors at the cut ----------------------------------------------------------
    "compress.random-k": Stream(
        "nopeek.compress.sparse.RandomK: the coordinates a party keeps of the messages it sends "
        "(``kind``: activation or gradient)",
        ("party", "kind"),
        "derive_seed(seed, 'compress.random-k', party, kind)",
        derived("compress.random-k"),
    ),
}
"""Stream name -> :class:`Stream`: the core's streams, and those the packages imported so far
registered (:func:`register_stream`). Add a core stream here (``derived(name)`` as its
formula) before drawing from it; ``tests/nopeek/test_seeding.py`` fails on a call site that
names no stream."""


def register_stream(name: str, stream: Stream) -> Stream:
    """Add ``stream`` to :data:`STREAMS` under ``name``; a package calls it for each of its own
    streams when it is imported, before anything draws from them.

    Registering the same definition again (a module imported anew) changes nothing and returns
    the stream registered first; another stream under a taken name is a bug (``KeyError``): two
    streams with one name would draw the same numbers.

    >>> s = register_stream("doc.example", Stream("this doctest", (), "the seed", identity))
    >>> stream_seed(5, "doc.example")
    5
    >>> _ = STREAMS.pop("doc.example")
    """
    known = STREAMS.get(name)
    if known is None:
        STREAMS[name] = stream
        return stream
    if (known.consumer, known.index, known.how) != (stream.consumer, stream.index, stream.how):
        raise KeyError(f"random stream {name!r} registered twice ({known.consumer})")
    return known


def _entropy(seed: int, name: str, index: tuple[Index, ...]) -> Entropy:
    stream = STREAMS.get(name)
    if stream is None:
        raise KeyError(
            f"unknown random stream {name!r}; register it with nopeek.seeding.register_stream "
            "(a package's streams are registered when it is imported) "
            f"(known: {', '.join(sorted(STREAMS))})"
        )
    if len(index) != len(stream.index):
        raise TypeError(
            f"stream {name!r} takes the indices ({', '.join(stream.index)}), got {index!r}"
        )
    return stream.derive(seed, *index)


def stream_seed(seed: int, name: str, *index: Index) -> int:
    """The integer seed of stream ``name`` (instance ``index``) of the run seeded ``seed``.

    Streams whose formula is a ``SeedSequence`` give its first 32-bit word.

    >>> stream_seed(0, "batches", 1, 2) == 0 * 100_003 + 1 + 7_919 * 2
    True
    >>> stream_seed(0, "model.segment", 1) != stream_seed(0, "model.segment", 2)
    True
    """
    entropy = _entropy(seed, name, index)
    if isinstance(entropy, np.random.SeedSequence):
        return int(entropy.generate_state(1)[0])
    return int(entropy)


def generator(seed: int, name: str, *index: Index, device: Any = None) -> torch.Generator:
    """A :class:`torch.Generator` (on ``device``, default CPU) seeded by :func:`stream_seed`."""
    gen = torch.Generator() if device is None else torch.Generator(device=torch.device(device))
    return gen.manual_seed(stream_seed(seed, name, *index))


def numpy_rng(seed: int, name: str, *index: Index) -> np.random.Generator:
    """A NumPy generator of stream ``name``: ``default_rng`` on the stream's int seed or
    ``SeedSequence``, so ``numpy_rng(s, n) == default_rng(stream_seed(s, n))`` for int streams."""
    return np.random.default_rng(_entropy(seed, name, index))


@contextmanager
def seeded(seed: int, name: str, *index: Index) -> Iterator[None]:
    """Seed torch's global RNG from stream ``name`` for the block; restore the CPU RNG after.

    For code that draws from the global RNG (``nn.Module`` initialisation, built on the CPU).
    As the call sites did before this table, ``torch.manual_seed`` also seeds the CUDA
    generators and leaves them seeded: kept so that GPU runs drawing from them (dropout in a
    torchvision model) give the numbers they gave.

    >>> with seeded(0, "model.init"):
    ...     a = torch.rand(2)
    >>> with seeded(0, "model.init"):
    ...     b = torch.rand(2)
    >>> bool((a == b).all())
    True
    """
    value = stream_seed(seed, name, *index)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(value)
        yield
