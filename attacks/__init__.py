"""nopeek.attacks: reconstruction and label-inference attacks on split models, with metrics.

Every attack declares a threat model and gets exactly what it grants (see
:mod:`nopeek.attacks.base`); :func:`run_attack` runs one on a finished run directory.
"""

import nopeek.attacks.streams  # noqa: F401 (registers the attacks' random streams first)
from nopeek.attacks import (  # noqa: F401 (register)
    active_completion,
    completion,
    fora,
    fsha,
    grn,
    inverse_network,
    known_pairs,
    label,
    label_cluster,
    label_direct,
    sdar,
    unsplit,
    whitebox,
    whitebox_prior,
)
from nopeek.attacks.base import (
    Attack,
    AttackInputs,
    LabelScores,
    Reconstruction,
    ThreatModel,
    check_options,
)
from nopeek.attacks.fsha import build_malicious_server
from nopeek.attacks.harness import run_attack
from nopeek.attacks.registry import ATTACKS
from nopeek.attacks.result import AttackResult

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackInputs",
    "AttackResult",
    "LabelScores",
    "Reconstruction",
    "ThreatModel",
    "build_malicious_server",
    "check_options",
    "run_attack",
]
