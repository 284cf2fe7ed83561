"""The random streams of nopeek.attacks, registered with :mod:`nopeek.seeding` on import.

Every attack draws from a named stream (``stream_seed(seed, "attack.fsha.nets")``), never
derives a seed itself; this module names them, says who draws from each, and keeps the formulas
of the streams that predate the seeding table, so attacks of earlier releases give the same
numbers. ``seed`` is the attack's ``--seed`` (FSHA's: the training run's). The package imports
this module first, so a stream is registered before any attack draws from it.
"""

from __future__ import annotations

from nopeek.seeding import Stream, derived, first_word, identity, register_stream

# --- the legacy formulas: each constant is named here once, kept so earlier results reproduce --
FSHA_TAG = 0xF5A
"""attack.fsha.*: ``SeedSequence([seed, 0xF5A, 1 (draws) | 2 (nets)])``, first 32-bit word."""
FRESH_TAG = 0x5EED
"""attack.fresh-segments: ``SeedSequence([seed, 0x5EED, part])``, first 32-bit word."""
CLONE_MUL, CLONE_OFFSET = 7919, 104729
"""attack.grad-match.clone: ``seed * 7919 + 104729`` (the 1000th and 10000th primes)."""

ATTACK_STREAMS: dict[str, Stream] = {
    "attack.aux-subset": Stream(
        "attacks.harness: the stratified --aux-size subset of the attacker's aux split",
        (),
        "legacy: the seed itself",
        identity,
    ),
    "attack.fresh-segments": Stream(
        "attacks._target.fresh: the seed of the freshly initialised segments an attacker builds "
        "(part 0 before the cut, 1 after); the caller steps past the training seed",
        ("part",),
        "legacy: SeedSequence([seed, 0x5EED, part]), first word",
        lambda seed, part: first_word(seed, FRESH_TAG, part),
    ),
    "attack.fsha.draws": Stream(
        "attacks.fsha: the malicious server's aux batches and gradient-penalty mixing",
        (),
        "legacy: SeedSequence([seed, 0xF5A, 1]), first word",
        lambda seed: first_word(seed, FSHA_TAG, 1),
    ),
    "attack.fsha.nets": Stream(
        "attacks.fsha: the initial weights of the pilot, decoder and critic",
        (),
        "legacy: SeedSequence([seed, 0xF5A, 2]), first word",
        lambda seed: first_word(seed, FSHA_TAG, 2),
    ),
    "attack.inverse-network.init": Stream(
        "attacks.inverse_network: the decoder's initial weights",
        (),
        "legacy: the seed itself",
        identity,
    ),
    "attack.inverse-network.batches": Stream(
        "attacks.inverse_network: the decoder's training minibatches",
        (),
        "legacy: the seed itself",
        identity,
    ),
    "attack.inversion-restart": Stream(
        "attacks.whitebox, attacks.unsplit: the random starting guess of restart ``restart`` "
        "(restart 0 starts from grey)",
        ("restart",),
        "derive_seed(seed, 'attack.inversion-restart', restart)",
        derived("attack.inversion-restart"),
    ),
    "attack.unsplit.clone-restart": Stream(
        "attacks.unsplit: the clone's re-initialised weights for restart ``restart``",
        ("restart",),
        "derive_seed(seed, 'attack.unsplit.clone-restart', restart)",
        derived("attack.unsplit.clone-restart"),
    ),
    "attack.search.sample": Stream(
        "attacks.search: the configurations drawn from an attack family's grid",
        (),
        "derive_seed(seed, 'attack.search.sample')",
        derived("attack.search.sample"),
    ),
    "attack.direction.reference": Stream(
        "attacks.label direction: the random reference gradient of reference=example",
        (),
        "legacy: the seed itself",
        identity,
    ),
    "attack.grad-match.clusters": Stream(
        "attacks.label grad-match: the k-means start (sklearn random_state)",
        (),
        "legacy: the seed itself",
        identity,
    ),
    "attack.grad-match.clone": Stream(
        "attacks.label grad-match: the clone tail's initial weights",
        (),
        "legacy: seed * 7919 + 104729",
        lambda seed: seed * CLONE_MUL + CLONE_OFFSET,
    ),
    "attack.cluster": Stream(
        "attacks.label_cluster: the k-means start of one epoch's gradients or activations "
        "(sklearn random_state)",
        ("epoch",),
        "derive_seed(seed, 'attack.cluster', epoch)",
        derived("attack.cluster"),
    ),
    "attack.completion": Stream(
        "attacks.completion: the completed model's head weights (part 'init') and its "
        "minibatches (part 'batches')",
        ("part",),
        "derive_seed(seed, 'attack.completion', part)",
        derived("attack.completion"),
    ),
    "attack.label-chance": Stream(
        "attacks.metrics.label_chance: the label permutations of a label attack's chance "
        "baseline (one generator for all of them)",
        (),
        "derive_seed(seed, 'attack.label-chance')",
        derived("attack.label-chance"),
    ),
    "attack.grn": Stream(
        "attacks.grn: the generator's initial weights (part 'init'), its minibatches and noise "
        "(part 'draws')",
        ("part",),
        "derive_seed(seed, 'attack.grn', part)",
        derived("attack.grn"),
    ),
    "attack.fora": Stream(
        "attacks.fora: the substitute's, critic's and decoder's initial weights (part 'init'), "
        "the substitute's minibatches and mixes (part 'draws'), the decoder's (part 'decoder')",
        ("part",),
        "derive_seed(seed, 'attack.fora', part)",
        derived("attack.fora"),
    ),
    "attack.sdar": Stream(
        "attacks.sdar: the simulator's, discriminator's and decoder's initial weights (part "
        "'init'), the minibatches (part 'draws')",
        ("part",),
        "derive_seed(seed, 'attack.sdar', part)",
        derived("attack.sdar"),
    ),
}
"""The attacks' streams by name (all under ``attack.``); each is in :data:`nopeek.seeding.STREAMS`
once this module is imported."""

for _name, _stream in ATTACK_STREAMS.items():
    register_stream(_name, _stream)
