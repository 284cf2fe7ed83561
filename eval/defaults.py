"""The default sweeps behind a bare ``nopeek report`` (and ``make run``): bundled digits data.

Sized to finish, attacks included, in a few minutes on two CPU cores:

- ``reconstruction``: the 10-class digits CNN cut at ``conv2`` (32x4x4 activations), 30 epochs;
  NoPeek alone at alpha 0, 2, 4, 6, 8 and Gaussian cut noise alone (clip 1, also at
  inference) at sigma 0.05, 0.1, 0.2; attacked by the inverse network (300 decoder steps, width
  32) and white-box inversion (64 victims, 300 steps).
- ``labels``: class 0 vs the rest (10% positives), 10 epochs, no defense vs max-norm, Marvell
  (s=1) and isotropic gradient noise (r=1); attacked by the norm and direction attacks.

Seeds 0 and 1 in both. ``NOPEEK_REPORT_SEEDS`` (e.g. ``0,1,2``) overrides the seeds.
"""

from __future__ import annotations

import os

from nopeek.config import TrainConfig
from nopeek.eval.settings import Setting, parse_ints
from nopeek.eval.sweep import SweepSpec

ALPHAS = (0.0, 2.0, 4.0, 6.0, 8.0)
SIGMAS = (0.05, 0.1, 0.2)
RECON_ATTACKS = ["inverse-network:steps=300,width=32", "white-box:steps=300,n_samples=64"]
LABEL_DEFENSES = ((), ("max-norm",), ("marvell:s=1",), ("isotropic:r=1",))
LABEL_ATTACKS = ["norm", "direction"]
TABULAR_ATTACKS = ["white-box-prior:steps=300,n_samples=64"]
"""Added to the reconstruction attacks where the model takes rows: a ReLU layer leaves some
rows with fewer active units than features, which only a data prior resolves."""
SWEEP_ATTACKS = ["inverse-network"]  # what `nopeek sweep` runs without --attack


def _seeds() -> list[int]:
    return parse_ints(os.environ.get("NOPEEK_REPORT_SEEDS", "0,1"), what="NOPEEK_REPORT_SEEDS")


def reconstruction_sweep() -> SweepSpec:
    """NoPeek and cut noise against reconstruction attacks at digits' conv2 cut."""
    noise = [
        Setting(0.0, (f"cut-noise:gaussian,sigma={s:g},clip=1,inference=true",)) for s in SIGMAS
    ]
    return SweepSpec(
        base=TrainConfig(dataset="digits", cut="conv2", epochs=30).resolved(),
        settings=[Setting(a) for a in ALPHAS] + noise,
        seeds=_seeds(),
        attacks=list(RECON_ATTACKS),
    )


def label_sweep() -> SweepSpec:
    """Label-gradient defenses against the norm and direction attacks, class 0 vs rest."""
    return SweepSpec(
        base=TrainConfig(dataset="digits", cut="conv2", epochs=10, one_vs_rest=0).resolved(),
        settings=[Setting(0.0, d) for d in LABEL_DEFENSES],
        seeds=_seeds(),
        attacks=list(LABEL_ATTACKS),
    )


def default_sweeps() -> list[tuple[str, SweepSpec]]:
    """(name, spec) of every default sweep, in report order."""
    return [("reconstruction", reconstruction_sweep()), ("labels", label_sweep())]


def recon_attacks(config: TrainConfig) -> list[str]:
    """The reconstruction attacks a verdict on ``config``'s runs uses by default:
    :data:`RECON_ATTACKS`, plus :data:`TABULAR_ATTACKS` when its model takes rows.

    >>> recon_attacks(TrainConfig(dataset="breast-cancer").resolved())[-1]
    'white-box-prior:steps=300,n_samples=64'
    >>> recon_attacks(TrainConfig(dataset="digits").resolved()) == RECON_ATTACKS
    True
    """
    from nopeek.models import MODELS

    entry = MODELS.get(config.model) if config.model in MODELS else None
    tabular = entry is not None and entry.input_kind == "tabular"
    return RECON_ATTACKS + (TABULAR_ATTACKS if tabular else [])
