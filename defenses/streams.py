"""The random streams of nopeek.defenses, registered with :mod:`nopeek.seeding` on import.

A defense draws its noise and initial weights from a named stream, indexed by the defense
class's number (``purpose``) and the party it runs at (``party_index``), so two defenses, or one
defense at two parties, never share draws. The formulas of the streams that predate the seeding
table are kept here so that defended runs of earlier releases give the same numbers. The package
imports this module first, so a stream is registered before any defense draws from it.
"""

from __future__ import annotations

from nopeek.seeding import Stream, derived, register_stream, seed63

# --- the legacy formulas: each constant is named here once, kept so earlier results reproduce --
DEFENSE_PURPOSE_STRIDE, DEFENSE_PARTY_STRIDE = 16, 4096
"""defense.*: ``SeedSequence([seed, purpose * 16 + i + 4096 * party_index])``, 63 bits."""
SENDER_TAG = 0x0A77AC
"""defense.attacker-queries: ``SeedSequence([seed, 0x0A77AC])``, 63 bits."""


def _defense(seed: int, purpose: int, party_index: int, i: int = 0) -> int:
    return seed63(seed, purpose * DEFENSE_PURPOSE_STRIDE + i + DEFENSE_PARTY_STRIDE * party_index)


DEFENSE_STREAMS: dict[str, Stream] = {
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
        derived("defense.layers"),
    ),
    "defense.attacker-queries": Stream(
        "defenses.spec.sender_transform: the seed of the defenses answering an attacker's "
        "queries (fresh noise, independent of the run's)",
        (),
        "legacy: SeedSequence([seed, 0x0A77AC]), 63 bits",
        lambda seed: seed63(seed, SENDER_TAG),
    ),
}
"""The defenses' streams by name (all under ``defense.``); each is in
:data:`nopeek.seeding.STREAMS` once this module is imported."""

for _name, _stream in DEFENSE_STREAMS.items():
    register_stream(_name, _stream)
