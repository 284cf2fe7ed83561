"""How much a label attack's scores say about the true labels: ROC-AUC per epoch (sklearn), its
fold (an attack that names the classes the wrong way round leaks as much), the worst epoch, and
the blind baseline of the same scores against permuted labels (:func:`label_chance`), which
the normalised ``leak`` is measured above (:mod:`nopeek.attacks.leak`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from nopeek.attacks.leak import normalised
from nopeek.errors import ConfigError
from nopeek.seeding import numpy_rng


def label_auc(y: Tensor, scores: Tensor, *, n_classes: int) -> float | None:
    """ROC-AUC of label scores against true labels ``y`` (M,) with sklearn.

    Binary tasks: ``scores`` (M,) (higher = class 1) or (M, 2) (column 1 used). Multi-class:
    ``scores`` (M, n_classes), one-vs-rest macro AUC (``multi_class="ovr"`` when the rows are
    probabilities; otherwise the same per-class average over a one-hot ``y``, which sklearn's
    ovr mode computes too but only accepts for rows summing to 1). Classes absent from ``y``
    are left out of the average. ``None`` when ``y`` holds a single class (AUC undefined).
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import label_binarize

    y_np, s = y.numpy(), scores.detach().double()
    present = sorted(set(y_np.tolist()))
    if len(present) < 2:
        return None
    if n_classes == 2:
        s = s[:, 1] if s.dim() == 2 else s
        return float(roc_auc_score(y_np, s.numpy()))
    if s.dim() != 2 or s.shape[1] != n_classes:
        raise ConfigError(
            f"a label attack on a {n_classes}-class task must give (M, {n_classes}) scores, got "
            f"{tuple(s.shape)}; train with --one-vs-rest K for a binary task"
        )
    if len(present) == n_classes and torch.allclose(s.sum(1), torch.ones(len(s), dtype=s.dtype)):
        return float(roc_auc_score(y_np, s.numpy(), multi_class="ovr", average="macro"))
    onehot = label_binarize(y_np, classes=list(range(n_classes)))[:, present]
    return float(roc_auc_score(onehot, s[:, present].numpy(), average="macro"))


AS_NAMED, FLIPPED = "as named", "flipped"


def fold_auc(auc: float) -> float:
    """``max(auc, 1 - auc)``: the AUC of the better of a ranking and its reverse.

    A binary attack has to name which side is label 1; one that separates the classes
    perfectly but names them the wrong way round scores AUC 0, and an attacker who flips its
    guess (it needs one known label, or the class balance) gets 1. The fold is what leaks.

    >>> fold_auc(0.2), fold_auc(0.9)
    (0.8, 0.9)
    """
    return max(float(auc), 1.0 - float(auc))


def label_leak(aucs: list[float | None], epochs: list[int], *, binary: bool = True) -> dict:
    """The folded AUCs of a label attack from its AUCs per epoch (``aucs[k]`` at ``epochs[k]``).

    Keys: ``auc_folded`` (final epoch, :func:`fold_auc` of ``auc``), ``auc_orientation``
    (``"as named"`` when the attack's naming is the better one, AUC >= 0.5, else
    ``"flipped"``), ``auc_folded_per_epoch``, and the worst epoch an attacker could pick:
    ``auc_folded_max`` and its ``auc_folded_max_epoch`` (the earliest of ties). An undefined
    AUC (one class) stays ``None``. Multi-class AUCs are not folded (``binary=False``): their
    classes were already matched to the truth (:func:`align_classes`), and a one-vs-rest
    average has no single flip. The normalised ``leak`` sets ``auc_folded_max`` against
    :func:`label_chance`.

    >>> out = label_leak([0.6, 0.1, 0.3], [0, 1, 2])
    >>> out["auc_folded"], out["auc_orientation"], out["auc_folded_max"]
    (0.7, 'flipped', 0.9)
    >>> out["auc_folded_max_epoch"]
    1
    """
    per = [None if a is None else (fold_auc(a) if binary else float(a)) for a in aucs]
    last = aucs[-1] if aucs else None
    known = [(v, -k) for k, v in enumerate(per) if v is not None]
    worst = max(known, default=None)
    return {
        "auc_folded": per[-1] if per else None,
        "auc_orientation": None if last is None else _orientation(last, binary),
        "auc_folded_per_epoch": per,
        "auc_folded_max": None if worst is None else worst[0],
        "auc_folded_max_epoch": None if worst is None else int(epochs[-worst[1]]),
    }


CHANCE_PERMUTATIONS = 20
"""Label permutations :func:`label_chance` averages over."""


def label_chance(
    y: dict[int, Tensor],
    scores: dict[int, Tensor],
    ids: dict[int, Tensor],
    *,
    n_classes: int,
    seed: int,
    predicted: dict[int, Tensor] | None = None,
    up_to_permutation: bool = False,
    permutations: int = CHANCE_PERMUTATIONS,
) -> float | None:
    """The worst-epoch folded AUC the attack's own scores reach against permuted labels.

    A label attack's blind baseline: the labels are shuffled among the attacked samples (one
    permutation of the sample ids, the same in every epoch, so scores that stay alike from
    epoch to epoch keep doing so), every epoch is scored as :func:`label_report` and
    :func:`label_leak` score the truth, and the worst epoch's ``auc_folded_max`` is averaged
    over ``permutations`` permutations drawn from the stream ``attack.label-chance`` of
    ``seed``. Picking the worst of many epochs lifts chance above 0.5 (about 0.64 for 30
    epochs of a few hundred samples); ``leak`` is measured above this. ``None`` when no
    permutation gives an AUC (one class). Arguments as :func:`label_report`, plus ``ids[e]``
    (M_e,), the sample ids of epoch ``e``.
    """
    epochs = sorted(y)
    every = torch.cat([ids[e].detach().cpu().long() for e in epochs])
    labels = torch.cat([y[e] for e in epochs])
    unique = torch.unique(every)  # sorted; a sample's label is the same in every epoch
    label_of = torch.empty(len(unique), dtype=labels.dtype)
    label_of[torch.searchsorted(unique, every)] = labels
    where = {e: torch.searchsorted(unique, ids[e].detach().cpu().long()) for e in epochs}
    rng = numpy_rng(seed, "attack.label-chance")
    shuffles = [
        label_of[torch.from_numpy(rng.permutation(len(unique)))] for _ in range(permutations)
    ]
    if n_classes == 2 and not up_to_permutation:  # every permutation of an epoch in one call
        per_epoch = [_binary_aucs([s[where[e]] for s in shuffles], scores[e]) for e in epochs]
        aucs = [[per_epoch[k][p] for k in range(len(epochs))] for p in range(permutations)]
    else:
        aucs = [
            label_report({e: s[where[e]] for e in epochs}, scores, predicted, n_classes=n_classes,
                         up_to_permutation=up_to_permutation)["auc_per_epoch"]
            for s in shuffles
        ]  # fmt: skip
    worst = []
    for per in aucs:
        folded = label_leak(per, epochs, binary=n_classes == 2)
        if folded["auc_folded_max"] is not None:
            worst.append(folded["auc_folded_max"])
    return sum(worst) / len(worst) if worst else None


def _binary_aucs(ys: list[Tensor], scores: Tensor) -> list[float | None]:
    """:func:`label_auc` of each labelling ``ys[p]`` (M,) of one binary epoch's ``scores`` (M,)
    or (M, 2), from one ranking of the scores.

    The AUC is the Mann-Whitney statistic over ``n1 n0``: ``(R1 - n1 (n1 + 1) / 2) / (n1 n0)``
    with ``R1`` the sum of the positives' ranks (ties get their average rank, which counts a
    tied pair as half, as the ROC curve's trapezoids do). The scores are ranked once
    (``scipy.stats.rankdata``) and every labelling's ``R1`` is one product with that ranking:
    sklearn's ``roc_auc_score`` per labelling, to rounding (tested against it), in a twentieth
    of the time (the permutation baseline scores 20 labellings of every epoch).
    """
    from scipy.stats import rankdata

    s = scores.detach().double()
    s = s[:, 1] if s.dim() == 2 else s
    ranks = rankdata(s.numpy())
    labels = np.stack([y.numpy() == y.max().item() for y in ys]).astype(np.float64)  # (P, M)
    n1 = labels.sum(1)
    n0 = len(ranks) - n1
    both = (n1 > 0) & (n0 > 0)  # one class: the AUC is undefined
    u = labels @ ranks - n1 * (n1 + 1) / 2
    return [float(a / b) if ok else None for a, b, ok in zip(u, n1 * n0, both)]


def label_leak_of(auc_folded_max: float | None, chance: float | None) -> float | None:
    """``clip((auc_folded_max - chance) / (1 - chance), 0, 1)``: a label attack's ``leak``
    (:func:`~nopeek.attacks.leak.normalised`); None when either is undefined (one class).

    >>> round(label_leak_of(0.82, 0.64), 6), label_leak_of(0.6, 0.64)
    (0.5, 0.0)
    """
    if auc_folded_max is None or chance is None:
        return None
    return normalised(auc_folded_max, chance)


def _orientation(auc: float, binary: bool) -> str:
    return AS_NAMED if auc >= 0.5 or not binary else FLIPPED


def align_classes(y: Tensor, scores: Tensor, predicted: Tensor | None, *, n_classes: int):
    """Relabel an attack's class indices to the true classes they agree with most.

    For attacks that learn which samples share a label but not its name (the classes of a
    cloned head are a permutation of the true ones). The permutation comes from the Hungarian
    algorithm on the confusion matrix of ``predicted`` (or the scores' argmax) against ``y``:
    a best case for the attacker, which only the scorer (holding ``y``) can compute. Returns
    ``(scores, predicted)`` with scores' columns moved to the matched true classes.
    """
    from nopeek.attacks.label import best_permutation

    guess = predicted if predicted is not None else scores.argmax(1)
    perm = best_permutation(y, guess.detach().cpu().long(), n_classes)
    aligned = torch.empty_like(scores)
    aligned[:, perm] = scores
    return aligned, (None if predicted is None else perm[predicted.detach().cpu().long()])


def label_report(
    y: dict[int, Tensor],
    scores: dict[int, Tensor],
    predicted: dict[int, Tensor] | None,
    *,
    n_classes: int,
    up_to_permutation: bool = False,
) -> dict:
    """AUC per epoch of a label attack, the final epoch's AUC, and its accuracy if it guesses.

    ``y[e]`` (M_e,) true labels and ``scores[e]`` (M_e,) or (M_e, classes) for epoch ``e``;
    ``predicted[e]`` (M_e,) hard guesses where the attack makes them. With
    ``up_to_permutation`` (multi-class scores whose class indices are arbitrary), each epoch is
    scored after :func:`align_classes`. Keys: ``auc`` (final epoch), ``auc_per_epoch``,
    ``epochs``, ``accuracy`` (final epoch, or ``None``), ``n_samples`` (final epoch).
    """
    epochs = sorted(y)
    if not epochs:
        raise ConfigError("the label attack scored no epoch; were any gradients recorded?")
    predicted = dict(predicted or {})
    scores = dict(scores)
    if up_to_permutation and n_classes > 2:
        for e in epochs:
            scores[e], guess = align_classes(
                y[e], scores[e].detach().cpu(), predicted.get(e), n_classes=n_classes
            )
            if guess is not None:
                predicted[e] = guess
    aucs = [label_auc(y[e], scores[e], n_classes=n_classes) for e in epochs]
    last = epochs[-1]
    accuracy = None
    if last in predicted:
        accuracy = float((predicted[last].detach().cpu().long() == y[last]).float().mean())
    return {
        "auc": aucs[-1],
        "auc_per_epoch": aucs,
        "epochs": epochs,
        "accuracy": accuracy,
        "n_samples": len(y[last]),
    }
