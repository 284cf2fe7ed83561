"""Every random stream of nopeek, derived from the user's seed in one place.

A *stream* is one use of randomness (the test split, the batch order of client k in epoch e,
the noise of one defense at one party, ...). Each has a name in :data:`STREAMS`, the one table
that says who draws from it, which indices tell its instances apart, and how its seed comes from
the user's. Call sites ask for a stream by name, never derive a seed themselves::

    stream_seed(seed, "batches", epoch, client)         # an int, for whatever takes one
    generator(seed, "defense.noise", purpose, party, i)  # a torch.Generator
    numpy_rng(seed, "shards")                           # a numpy.random.Generator
    with seeded(seed, "model.init"): model = build()    # torch's global RNG, for one block

New streams use :func:`derive_seed`: NumPy's ``SeedSequence`` mixes the seed, a CRC-32 of the
stream's tag and the indices into an independent 32-bit seed, so streams never overlap and a seed
fixes a run, in one process or in many. The streams that predate this table keep the formula they
had (their magic constants are named in the table, once): results of earlier releases reproduce,
same seed, same numbers. An unknown name is a programming error (``KeyError`` listing the names).
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


def _words32(*entropy: int) -> int:
    """The first 32-bit word of ``SeedSequence(entropy)``."""
    return int(_sequence(*entropy).generate_state(1)[0])


def _words63(*entropy: int) -> int:
    """A 63-bit seed from the first two 32-bit words of ``SeedSequence(entropy)``."""
    state = _sequence(*entropy).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


# --- the legacy formulas: each constant is named here once, kept so earlier results reproduce --
DATA_PURPOSES = {"test": 1, "aux": 2, "max-train": 3, "shuffle-labels": 4}
"""data.*: ``SeedSequence([seed, purpose])``, first 32-bit word."""
BATCH_SEED_MUL, BATCH_CLIENT_MUL = 100_003, 7_919
"""batches: ``seed * 100_003 + epoch + 7_919 * client`` (two primes)."""
SHARD_TAG = 0x5A4D
"""shards: NumPy's generator on ``SeedSequence([seed, 0x5A4D])``."""
LEAKAGE_OFFSET = 1_000_003
"""leakage-sample: NumPy's generator seeded ``seed + 1_000_003``."""
FSHA_TAG = 0xF5A
"""attack.fsha.*: ``SeedSequence([seed, 0xF5A, 1 (draws) | 2 (nets)])``, first 32-bit word."""
FRESH_TAG = 0x5EED
"""attack.fresh-segments: ``SeedSequence([seed, 0x5EED, part])``, first 32-bit word."""
CLONE_MUL, CLONE_OFFSET = 7919, 104729
"""attack.grad-match.clone: ``seed * 7919 + 104729`` (the 1000th and 10000th primes)."""
DEFENSE_PURPOSE_STRIDE, DEFENSE_PARTY_STRIDE = 16, 4096
"""defense.*: ``SeedSequence([seed, purpose * 16 + i + 4096 * party_index])``, 63 bits."""
SENDER_TAG = 0x0A77AC
"""defense.attacker-queries: ``SeedSequence([seed, 0x0A77AC])``, 63 bits."""


def _defense(seed: int, purpose: int, party_index: int, i: int = 0) -> int:
    return _words63(seed, purpose * DEFENSE_PURPOSE_STRIDE + i + DEFENSE_PARTY_STRIDE * party_index)


def _default(tag: str) -> Callable[..., Entropy]:
    """The default derivation under ``tag`` (:func:`derive_seed`)."""
    return lambda seed, *index: derive_seed(seed, tag, *index)


def _identity(seed: int) -> Entropy:
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
        lambda seed: _words32(seed, DATA_PURPOSES["test"]),
    ),
    "data.aux": Stream(
        "nopeek.data: the aux split (bundled/file sets; the 10% of a torchvision train set)",
        (),
        "legacy: SeedSequence([seed, 2]), first word",
        lambda seed: _words32(seed, DATA_PURPOSES["aux"]),
    ),
    "data.max-train": Stream(
        "nopeek.data: the stratified --max-train subset of the train split",
        (),
        "legacy: SeedSequence([seed, 3]), first word",
        lambda seed: _words32(seed, DATA_PURPOSES["max-train"]),
    ),
    "data.shuffle-labels": Stream(
        "nopeek.data: the permutation of train labels of --shuffle-labels",
        (),
        "legacy: SeedSequence([seed, 4]), first word",
        lambda seed: _words32(seed, DATA_PURPOSES["shuffle-labels"]),
    ),
    "data.aligned": Stream(
        "nopeek.data.party.aligned_splits: the train/test/aux split of samples keyed by id "
        "(--id-column: the aligned order, the same at every party)",
        (),
        "derive_seed(seed, 'data.aligned')",
        _default("data.aligned"),
    ),
    "data.aligned-max-train": Stream(
        "nopeek.data.party.aligned_splits: the --max-train subset of that train split",
        (),
        "derive_seed(seed, 'data.aligned-max-train')",
        _default("data.aligned-max-train"),
    ),
    "model.init": Stream(
        "nopeek.training.trainer, eval.fedavg: the initial weights of the whole model",
        (),
        "legacy: the seed itself (torch.manual_seed(seed))",
        _identity,
    ),
    "model.segment": Stream(
        "nopeek.training.trainer: the other segments of a multi-party topology (client bottoms, "
        "heads)",
        ("index",),
        "derive_seed(seed, 'segment', index) (tag kept from before this table)",
        _default("segment"),
    ),
    "topology.init": Stream(
        "nopeek.training.trainer.build_topology: layers a topology adds itself (vertical's "
        "adapter from "
        "the merged cuts to the top)",
        (),
        "derive_seed(seed, 'topology.init')",
        _default("topology.init"),
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
    # --- attacks (seed: the attack's --seed; FSHA: the training run's) ---------------------
    "attack.aux-subset": Stream(
        "attacks.harness: the stratified --aux-size subset of the attacker's aux split",
        (),
        "legacy: the seed itself",
        _identity,
    ),
    "attack.fresh-segments": Stream(
        "attacks._target.fresh: the seed of the freshly initialised segments an attacker builds "
        "(part 0 before the cut, 1 after); the caller steps past the training seed",
        ("part",),
        "legacy: SeedSequence([seed, 0x5EED, part]), first word",
        lambda seed, part: _words32(seed, FRESH_TAG, part),
    ),
    "attack.fsha.draws": Stream(
        "attacks.fsha: the malicious server's aux batches and gradient-penalty mixing",
        (),
        "legacy: SeedSequence([seed, 0xF5A, 1]), first word",
        lambda seed: _words32(seed, FSHA_TAG, 1),
    ),
    "attack.fsha.nets": Stream(
        "attacks.fsha: the initial weights of the pilot, decoder and critic",
        (),
        "legacy: SeedSequence([seed, 0xF5A, 2]), first word",
        lambda seed: _words32(seed, FSHA_TAG, 2),
    ),
    "attack.inverse-network.init": Stream(
        "attacks.inverse_network: the decoder's initial weights",
        (),
        "legacy: the seed itself",
        _identity,
    ),
    "attack.inverse-network.batches": Stream(
        "attacks.inverse_network: the decoder's training minibatches",
        (),
        "legacy: the seed itself",
        _identity,
    ),
    "attack.inversion-restart": Stream(
        "attacks.whitebox, attacks.unsplit: the random starting guess of restart ``restart`` "
        "(restart 0 starts from grey)",
        ("restart",),
        "derive_seed(seed, 'attack.inversion-restart', restart)",
        _default("attack.inversion-restart"),
    ),
    "attack.unsplit.clone-restart": Stream(
        "attacks.unsplit: the clone's re-initialised weights for restart ``restart``",
        ("restart",),
        "derive_seed(seed, 'attack.unsplit.clone-restart', restart)",
        _default("attack.unsplit.clone-restart"),
    ),
    "attack.search.sample": Stream(
        "attacks.search: the configurations drawn from an attack family's grid",
        (),
        "derive_seed(seed, 'attack.search.sample')",
        _default("attack.search.sample"),
    ),
    "attack.direction.reference": Stream(
        "attacks.label direction: the random reference gradient of reference=example",
        (),
        "legacy: the seed itself",
        _identity,
    ),
    "attack.grad-match.clusters": Stream(
        "attacks.label grad-match: the k-means start (sklearn random_state)",
        (),
        "legacy: the seed itself",
        _identity,
    ),
    "attack.grad-match.clone": Stream(
        "attacks.label grad-match: the clone tail's initial weights",
        (),
        "legacy: seed * 7919 + 104729",
        lambda seed: seed * CLONE_MUL + CLONE_OFFSET,
    ),
    "attack.cluster": Stream(
        "attacks.label_cluster: the k-means start of one epoch's gradients (sklearn random_state)",
        ("epoch",),
        "derive_seed(seed, 'attack.cluster', epoch)",
        _default("attack.cluster"),
    ),
    "attack.completion": Stream(
        "attacks.completion: the completed model's head weights (part 'init') and its "
        "minibatches (part 'batches')",
        ("part",),
        "derive_seed(seed, 'attack.completion', part)",
        _default("attack.completion"),
    ),
    "attack.label-chance": Stream(
        "attacks.metrics.label_chance: the label permutations of a label attack's chance "
        "baseline (one generator for all of them)",
        (),
        "derive_seed(seed, 'attack.label-chance')",
        _default("attack.label-chance"),
    ),
    "attack.grn": Stream(
        "attacks.grn: the generator's initial weights (part 'init'), its minibatches and noise "
        "(part 'draws')",
        ("part",),
        "derive_seed(seed, 'attack.grn', part)",
        _default("attack.grn"),
    ),
    "attack.fora": Stream(
        "attacks.fora: the substitute's, critic's and decoder's initial weights (part 'init'), "
        "the substitute's minibatches and mixes (part 'draws'), the decoder's (part 'decoder')",
        ("part",),
        "derive_seed(seed, 'attack.fora', part)",
        _default("attack.fora"),
    ),
    "attack.sdar": Stream(
        "attacks.sdar: the simulator's, discriminator's and decoder's initial weights (part "
        "'init'), the minibatches (part 'draws')",
        ("part",),
        "derive_seed(seed, 'attack.sdar', part)",
        _default("attack.sdar"),
    ),
    # --- defenses (purpose: the defense class's number; party_index: the party it runs at) ---
    "defense.noise": Stream(
        "defenses.base: noise stream i of a defense at a party (cut noise: 0 train, 1 inference; "
        "label-gradient defenses, dp-sgd: 0)",
        ("purpose", "party_index", "i"),
        "legacy: SeedSequence([seed, purpose * 16 + i + 4096 * party_index]), 63 bits",
        _defense,
    ),
    "defense.decoder": Stream(
        "defenses.adversarial: the simulated attacker's decoder weights (purpose 7, no noise)",
        ("purpose", "party_index"),
        "legacy: as defense.noise with i = 0",
        _defense,
    ),
    "defense.layers": Stream(
        "defenses.mid, defenses.cae: the initial weights of a defense's own layers (MID: one "
        "bottleneck per cut and sender; CAE: its autoencoder, cut and sender empty)",
        ("purpose", "party_index", "cut", "sender"),
        "derive_seed(seed, 'defense.layers', purpose, party_index, cut, sender)",
        _default("defense.layers"),
    ),
    "defense.attacker-queries": Stream(
        "defenses.spec.sender_transform: the seed of the defenses answering an attacker's "
        "queries (fresh noise, independent of the run's)",
        (),
        "legacy: SeedSequence([seed, 0x0A77AC]), 63 bits",
        lambda seed: _words63(seed, SENDER_TAG),
    ),
    # --- compressors at the cut ----------------------------------------------------------
    "compress.random-k": Stream(
        "nopeek.compress.sparse.RandomK: the coordinates a party keeps of the messages it sends "
        "(``kind``: activation or gradient)",
        ("party", "kind"),
        "derive_seed(seed, 'compress.random-k', party, kind)",
        _default("compress.random-k"),
    ),
    # --- eval: ExpertMatcher --------------------------------------------------------------
    "expertmatcher.domain-noise": Stream(
        "eval.expertmatcher: the noise of a noisy domain's split (0 train, 1 test, 2 aux)",
        ("domain", "split"),
        "derive_seed(seed, domain, split): the domain name is the tag",
        lambda seed, domain, split: derive_seed(seed, domain, split),
    ),
    "expertmatcher.encoder": Stream(
        "eval.expertmatcher: the agreed encoder's fixed random weights",
        (),
        "derive_seed(seed, 'expertmatcher-encoder')",
        _default("expertmatcher-encoder"),
    ),
    "expertmatcher.init": Stream(
        "eval.expertmatcher: the initial weights of expert ``index``",
        ("index",),
        "derive_seed(seed, 'expertmatcher-init', index)",
        _default("expertmatcher-init"),
    ),
    "expertmatcher.ae": Stream(
        "eval.expertmatcher: the autoencoder minibatches of expert ``index``",
        ("index",),
        "derive_seed(seed, 'expertmatcher-ae', index)",
        _default("expertmatcher-ae"),
    ),
    "expertmatcher.clf": Stream(
        "eval.expertmatcher: the classifier minibatches of expert ``index``",
        ("index",),
        "derive_seed(seed, 'expertmatcher-clf', index)",
        _default("expertmatcher-clf"),
    ),
    "expertmatcher.attack": Stream(
        "eval.expertmatcher: the server's inverse network's initial weights",
        (),
        "derive_seed(seed, 'expertmatcher-attack')",
        _default("expertmatcher-attack"),
    ),
    "expertmatcher.attack-batches": Stream(
        "eval.expertmatcher: the server's inverse network's minibatches",
        (),
        "derive_seed(seed, 'expertmatcher-attack-batches')",
        _default("expertmatcher-attack-batches"),
    ),
}
"""Stream name -> :class:`Stream`. Add a stream here (``_default(name)`` as its formula) before
drawing from it; ``tests/nopeek/test_seeding.py`` fails on a call site that names no stream."""


def _entropy(seed: int, name: str, index: tuple[Index, ...]) -> Entropy:
    stream = STREAMS.get(name)
    if stream is None:
        raise KeyError(
            f"unknown random stream {name!r}; register it in nopeek.seeding.STREAMS "
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
