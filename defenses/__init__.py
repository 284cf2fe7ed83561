"""nopeek.defenses: what the parties can do to leak less at the cut.

- :class:`CutNoise` (``cut-noise``): per-sample clipping + Gaussian/Laplace noise on the cut
  activation, with ``epsilon_cut`` from Opacus' RDP accountant;
- :class:`DPSGD` (``dp-sgd``): Opacus DP-SGD on the client segment, ``epsilon_dpsgd``;
- label-gradient defenses of Li et al. 2022, applied by the label party on the gradient it
  sends back: :class:`MaxNorm` (``max-norm``, additive), :class:`MaxNormMult`
  (``max-norm-mult``, multiplicative), :class:`Marvell` (``marvell``),
  :class:`IsotropicNoise` (``isotropic``);
- :class:`Adversarial` (``adversarial``): the data party trains against its own simulated
  inversion decoder (min-max, an attacker-aware defense against reconstruction);
- label defenses at the label party: :class:`GradientSparsification` (``grad-sparsify``, top-k
  of the gradient sent back), :class:`MID` (``mid``, a variational bottleneck on what it
  receives), :class:`CAE` (``cae``, soft fake labels from a confusional autoencoder),
  :class:`DCAE` (``dcae``, CAE then the gradient sent back quantised, DiscreteSGD),
  :class:`LabelDP` (``label-dp``, randomized response on the labels), :class:`Mixup`
  (``mixup``, training on mixed received activations and labels).

Each is a :class:`~nopeek.hooks.CutHook`; :func:`parse_defenses` builds them from the
``--defense`` specs (grammar in :mod:`nopeek.defenses.spec`) and :data:`DEFENSES` lists them.
"""

import nopeek.defenses.streams  # noqa: F401 (registers the defenses' random streams first)
from nopeek.defenses.adversarial import Adversarial
from nopeek.defenses.base import Defense
from nopeek.defenses.cae import CAE
from nopeek.defenses.cut_noise import (
    CutNoise,
    calibrate_cut_sigma,
    clip_per_sample,
    gaussian_cut_epsilon,
    laplace_cut_epsilon,
)
from nopeek.defenses.dcae import DCAE
from nopeek.defenses.dpsgd import DPSGD
from nopeek.defenses.label_dp import LabelDP
from nopeek.defenses.label_gradient import (
    IsotropicNoise,
    LabelGradientDefense,
    MaxNorm,
    MaxNormMult,
)
from nopeek.defenses.marvell import Marvell, MarvellNoise, solve_marvell, sum_kl
from nopeek.defenses.mid import MID
from nopeek.defenses.mixup import Mixup
from nopeek.defenses.sparsify import GradientSparsification
from nopeek.defenses.spec import (
    DEFENSES,
    parse_defense_option,
    parse_defenses,
    parse_spec,
    run_sender,
    sender_transform,
)

__all__ = [
    "DEFENSES",
    "Adversarial",
    "CAE",
    "DCAE",
    "DPSGD",
    "CutNoise",
    "Defense",
    "GradientSparsification",
    "IsotropicNoise",
    "LabelDP",
    "LabelGradientDefense",
    "MID",
    "Mixup",
    "Marvell",
    "MarvellNoise",
    "MaxNorm",
    "MaxNormMult",
    "calibrate_cut_sigma",
    "clip_per_sample",
    "gaussian_cut_epsilon",
    "laplace_cut_epsilon",
    "parse_defense_option",
    "parse_defenses",
    "parse_spec",
    "run_sender",
    "sender_transform",
    "solve_marvell",
    "sum_kl",
]
