"""The random streams of nopeek.eval, registered with :mod:`nopeek.seeding` on import.

ExpertMatcher (:mod:`nopeek.eval.expertmatcher`) builds its own experts, encoder and attacker
outside a training run; their draws are named here (tags kept from before the seeding table, so
its numbers reproduce). The package imports this module first, so a stream is registered before
anything draws from it.
"""

from __future__ import annotations

from nopeek.seeding import Stream, derive_seed, derived, register_stream

EVAL_STREAMS: dict[str, Stream] = {
    "expertmatcher.domain-noise": Stream(
        "eval.expertmatcher: the noise of a noisy domain's split (0 train, 1 test, 2 aux)",
        ("domain", "split"),
        "derive_seed(seed, domain, split): the domain name is the tag",
        derive_seed,
    ),
    "expertmatcher.encoder": Stream(
        "eval.expertmatcher: the agreed encoder's fixed random weights",
        (),
        "derive_seed(seed, 'expertmatcher-encoder')",
        derived("expertmatcher-encoder"),
    ),
    "expertmatcher.init": Stream(
        "eval.expertmatcher: the initial weights of expert ``index``",
        ("index",),
        "derive_seed(seed, 'expertmatcher-init', index)",
        derived("expertmatcher-init"),
    ),
    "expertmatcher.ae": Stream(
        "eval.expertmatcher: the autoencoder minibatches of expert ``index``",
        ("index",),
        "derive_seed(seed, 'expertmatcher-ae', index)",
        derived("expertmatcher-ae"),
    ),
    "expertmatcher.clf": Stream(
        "eval.expertmatcher: the classifier minibatches of expert ``index``",
        ("index",),
        "derive_seed(seed, 'expertmatcher-clf', index)",
        derived("expertmatcher-clf"),
    ),
    "expertmatcher.attack": Stream(
        "eval.expertmatcher: the server's inverse network's initial weights",
        (),
        "derive_seed(seed, 'expertmatcher-attack')",
        derived("expertmatcher-attack"),
    ),
    "expertmatcher.attack-batches": Stream(
        "eval.expertmatcher: the server's inverse network's minibatches",
        (),
        "derive_seed(seed, 'expertmatcher-attack-batches')",
        derived("expertmatcher-attack-batches"),
    ),
}
"""The eval package's streams by name; each is in :data:`nopeek.seeding.STREAMS` once this
module is imported."""

for _name, _stream in EVAL_STREAMS.items():
    register_stream(_name, _stream)
