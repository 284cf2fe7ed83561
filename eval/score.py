"""Thresholds and the one-number trade-off score, both on the attack results' ``leak``.

Every attack result carries ``leak`` in [0, 1] (0 = no better than a blind guess, 1 = exact;
:mod:`nopeek.attacks.leak` defines it per modality: SSIM over the mean-image guess for images,
R2 over the mean guess in original units for tabular rows, the worst-epoch folded AUC over its
label-permuted chance level for labels). The summaries read that one column, worst over the
attacks run (:mod:`nopeek.eval.summary`).

The trade-off score of a setting (after VFLAIR's defense capability score, Zou et al. 2023)::

    score = 1 / (1 + sqrt((1 - beta) * dA**2 + beta * dL**2))

with ``dA = max(0, acc_undefended - acc)`` (the accuracy lost, in [0, 1]), ``dL`` = the largest
``leak`` over the attacks that were run (the strongest attack), and ``beta = 0.5``.
It is 1 for a free, perfect defense and falls towards 0.5 as accuracy or privacy are lost.
"""

from __future__ import annotations

import math

from nopeek.attacks.leak import ssim_leak as reconstruction_leakage
from nopeek.attacks.metrics import fold_auc

# The default budget on ``leak``: a fifth of the way from a blind guess to an exact recovery.
LEAK_THRESHOLD = 0.2
# SSIM below 0.3: reconstructions counted as unrecognisable (He, Zhang & Lee, "Model inversion
# attacks against collaborative inference", ACSAC 2019); ``--max-ssim`` budgets, images only.
SSIM_THRESHOLD = 0.3
# Label AUC of 0.5 is chance (Li et al., "Label leakage and protection in two-party split
# learning", ICLR 2022); 0.6 leaves a margin for the estimation noise of a few hundred samples.
LABEL_AUC_THRESHOLD = 0.6
BETA = 0.5
ACCURACY_DROP_POINTS = 5.0  # tune's default --max-accuracy-drop, in percentage points

__all__ = [
    "ACCURACY_DROP_POINTS",
    "BETA",
    "LABEL_AUC_THRESHOLD",
    "LEAK_THRESHOLD",
    "SSIM_THRESHOLD",
    "reconstruction_leakage",
    "symmetric_auc",
    "tradeoff_score",
]


def symmetric_auc(auc: float) -> float:
    """``max(auc, 1 - auc)``: an attacker can flip a worse-than-chance guess (the harness's
    ``auc_folded``; one definition, :func:`nopeek.attacks.metrics.fold_auc`).

    >>> symmetric_auc(0.2)
    0.8
    """
    return fold_auc(auc)


def tradeoff_score(
    accuracy: float, reference_accuracy: float, leakage: float, *, beta: float = BETA
) -> float:
    """The trade-off score (see the module docstring); higher is better, in (0, 1].

    >>> round(tradeoff_score(0.9, 0.9, 0.0), 3)
    1.0
    >>> round(tradeoff_score(0.8, 0.9, 0.1), 3)
    0.909
    """
    d_acc = max(0.0, reference_accuracy - accuracy)
    return 1.0 / (1.0 + math.sqrt((1.0 - beta) * d_acc**2 + beta * leakage**2))
