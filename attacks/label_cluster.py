"""Clustering label inference: the returned gradients of one class cluster together.

Liu and Lyu, "Clustering Label Inference Attack against Practical Split Learning" (2022); the
similarity-based inference of Qiu, Zhang, Ji, Hu, Chen, Wang, "Your Labels Are Selling You Out:
Relation Leaks in Vertical Federated Learning" (IEEE TDSC 2022) reads the same structure. The
attacker is the party that receives cut gradients without holding the labels. In every epoch it
clusters the gradients it received into ``n_classes`` groups with k-means (sklearn); examples of
one class get gradients that point alike (for softmax cross-entropy the logit gradient is
``p - onehot(y)``, back-propagated through the label party's layers), so each cluster is one
class. Unlike the norm and direction scores it works for any number of classes.

Liu and Lyu cluster the smashed data as well: the forward activations the data party itself
computes and sends, which a trained client segment already groups by class (the server's layers
separate the classes from them). ``cluster-activations`` (:class:`ClusterActivations`) is that
variant: the same k-means over the activations the gradient receiver sent at the cut in the
training phase (granted ``sent_activations``: its own messages, nothing of the label party),
for the epochs the trainer kept them (the last one).

Details the papers leave open, as chosen here:

- ``metric=cosine`` (default) clusters the unit-normalised gradient rows (the direction only, as
  Liu and Lyu's cosine distance does; spherical k-means on unit rows), ``metric=euclidean`` the
  raw rows;
- k-means++ with 10 restarts, per epoch, seeded from the ``attack.cluster`` stream;
- scores: minus each example's distance to every centroid, (M, n_classes). The clusters are
  *groups*, not class names: with more than two classes the result is scored after the
  Hungarian matching of clusters to classes (``classes_up_to_permutation``, the attacker's best
  case, as grad-match's); with two, the smaller cluster is named label 1 by ``positive``
  (``minority``, default, or ``majority``) and the folded AUC reads through a wrong naming.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import Tensor

from nopeek.attacks.base import LABEL, Attack, AttackInputs, LabelScores, ThreatModel
from nopeek.attacks.label import POSITIVE_CHOICES, _by_epoch, _choice, _positive_class, unit_rows
from nopeek.attacks.registry import register
from nopeek.errors import ThreatModelError
from nopeek.seeding import stream_seed

METRICS = ("cosine", "euclidean")


def cluster_gradients(
    g: Tensor, k: int, *, metric: str, seed: int, what: str = "gradients"
) -> tuple[Tensor, Tensor]:
    """k-means of rows g (M, *cut_shape) (gradients or activations) -> (cluster of each row
    (M,), distances to the k centroids (M, k)); ``metric="cosine"`` clusters the unit rows.

    >>> g = torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0]])
    >>> labels, _ = cluster_gradients(g, 2, metric="cosine", seed=0)
    >>> bool(labels[0] == labels[1]) and bool(labels[2] == labels[3] != labels[0])
    True
    """
    if len(g) < k:
        raise ThreatModelError(
            f"cluster needs at least {k} observed {what} per epoch, got {len(g)}; train with "
            "a larger --record-samples"
        )
    rows = unit_rows(g) if metric == "cosine" else g.detach().flatten(1).double()
    km = KMeans(n_clusters=k, n_init=10, random_state=seed)
    data = np.ascontiguousarray(rows.cpu().numpy())
    labels = km.fit_predict(data)
    return torch.as_tensor(labels, dtype=torch.long), torch.as_tensor(km.transform(data))


@register
class ClusterAttack(Attack):
    """k-means of each epoch's cut gradients into the classes (Liu and Lyu 2022).

    Options: ``metric`` (``cosine`` | ``euclidean``), ``positive`` (binary naming).
    """

    name = "cluster"
    kind = LABEL
    threat_model = ThreatModel(gradients=True)
    option_keys = ("metric", "positive")
    search_space = {"metric": METRICS}
    observes = "gradients"  # the granted stream it clusters, epoch by epoch

    def __init__(self, *, metric: str | None = None, positive: str | None = None) -> None:
        self.metric, self.positive = metric, positive

    def run(self, inputs: AttackInputs) -> LabelScores:
        metric = _choice(self.metric, inputs, "metric", METRICS)
        positive = _choice(self.positive, inputs, "positive", POSITIVE_CHOICES)
        k = inputs.n_classes
        ids, scores, predicted = {}, {}, {}
        what = "gradients" if self.observes == "gradients" else "activations"
        for epoch, seen in _by_epoch(inputs.need(self.observes)):
            seed = stream_seed(inputs.seed, "attack.cluster", epoch)
            labels, dist = cluster_gradients(seen.tensor, k, metric=metric, seed=seed, what=what)
            ids[epoch] = seen.ids.clone()
            if k > 2:
                scores[epoch], predicted[epoch] = -dist.float(), labels
                continue
            pos = _positive_class(labels, positive)
            scores[epoch] = (dist[:, 1 - pos] - dist[:, pos]).float()
            predicted[epoch] = (labels == pos).long()
        extra = {"metric": metric, "positive": positive, "classes_up_to_permutation": k > 2}
        return LabelScores(ids=ids, scores=scores, predicted=predicted, extra=extra)


@register
class ClusterActivations(ClusterAttack):
    """k-means of the activations the attacker itself sent at the cut while training, into the
    classes (Liu and Lyu 2022 on smashed data); the options of ``cluster``.

    Granted only ``sent_activations``: the data party's own forward messages (training phase,
    the epochs the trainer kept), no gradient and nothing of the label party.
    """

    name = "cluster-activations"
    threat_model = ThreatModel(sent_activations=True)
    option_keys = ClusterAttack.option_keys
    observes = "sent_activations"
