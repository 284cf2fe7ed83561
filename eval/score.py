"""Leakage normalisation, literature thresholds and the one-number trade-off score.

Leakage of one attack, scaled to [0, 1] (0 = no better than an attacker who saw nothing):

- reconstruction: ``(ssim - baseline_ssim) / (1 - baseline_ssim)`` clipped to [0, 1], where
  ``baseline_ssim`` is the SSIM of the attack's data-free baseline guess (reported by the
  attack harness next to ``ssim``);
- label inference: ``2 * (leak - 0.5)`` with ``leak = max(auc, 1 - auc)``
  (:func:`nopeek.attacks.metrics.fold_auc`, the same fold the attack harness writes as
  ``leak``); an attacker may flip its guess, so an AUC of 0.2 leaks as much as 0.8. The
  summaries pass the worst epoch's leak (``leak_max``), see :mod:`nopeek.eval.summary`.

The trade-off score of a setting (after VFLAIR's defense capability score, Zou et al. 2023)::

    score = 1 / (1 + sqrt((1 - beta) * dA**2 + beta * dL**2))

with ``dA = max(0, acc_undefended - acc)`` (the accuracy lost, in [0, 1]), ``dL`` = the largest
normalised leakage over the attacks that were run (the strongest attack), and ``beta = 0.5``.
It is 1 for a free, perfect defense and falls towards 0.5 as accuracy or privacy are lost.
"""

from __future__ import annotations

import math

from nopeek.attacks.metrics import fold_auc

# SSIM below 0.3: reconstructions counted as unrecognisable (He, Zhang & Lee, "Model inversion
# attacks against collaborative inference", ACSAC 2019).
SSIM_THRESHOLD = 0.3
# Label AUC of 0.5 is chance (Li et al., "Label leakage and protection in two-party split
# learning", ICLR 2022); 0.6 leaves a margin for the estimation noise of a few hundred samples.
LABEL_AUC_THRESHOLD = 0.6
BETA = 0.5


def symmetric_auc(auc: float) -> float:
    """``max(auc, 1 - auc)``: an attacker can flip a worse-than-chance guess (the harness's
    ``leak``; one definition, :func:`nopeek.attacks.metrics.fold_auc`).

    >>> symmetric_auc(0.2)
    0.8
    """
    return fold_auc(auc)


def reconstruction_leakage(ssim: float, baseline_ssim: float) -> float:
    """SSIM above the data-free baseline, scaled so that a perfect reconstruction is 1.

    >>> round(reconstruction_leakage(0.6, 0.2), 6)
    0.5
    >>> reconstruction_leakage(0.1, 0.2)
    0.0
    """
    if baseline_ssim >= 1.0:
        return 0.0
    return min(1.0, max(0.0, (ssim - baseline_ssim) / (1.0 - baseline_ssim)))


def label_leakage(auc: float) -> float:
    """Label AUC above chance, scaled to [0, 1] (folded first: 0.25 leaks as 0.75 does).

    >>> label_leakage(0.75), label_leakage(0.25)
    (0.5, 0.5)
    """
    return 2.0 * (symmetric_auc(auc) - 0.5)


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
