"""cluster-activations: k-means of the attacker's own training-phase activations (Liu & Lyu)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans

from nopeek import TrainConfig
from nopeek.attacks import ATTACKS, run_attack
from nopeek.attacks.base import AttackInputs
from nopeek.observe import Observed
from nopeek.seeding import stream_seed
from nopeek.training.trainer import train


def _synthetic(k=4, per=30, d=16, spread=0.05, seed=0):
    """Activations of k classes around k random non-negative centres, one epoch."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(k, d, generator=g)
    y = torch.arange(k).repeat_interleave(per)
    x = (centres[y] + spread * torch.randn(len(y), d, generator=g)).relu()
    n = len(y)
    return x, y, Observed(x, torch.arange(n), torch.full((n,), 3), torch.arange(n))


def test_the_clusters_are_sklearn_kmeans_of_the_unit_rows():
    x, y, seen = _synthetic()
    inputs = AttackInputs((1, 8, 8), 1.0, 4, seed=5, sent_activations=seen)
    out = ATTACKS.get("cluster-activations")().run(inputs)
    rows = F.normalize(x.double(), dim=1).numpy()
    km = KMeans(n_clusters=4, n_init=10, random_state=stream_seed(5, "attack.cluster", 3))
    want = km.fit_predict(rows)
    assert np.array_equal(out.predicted[3].numpy(), want)
    np.testing.assert_allclose(-out.scores[3].numpy(), km.transform(rows), rtol=1e-5)
    # the clusters are the classes up to their names: Hungarian matching gets every one right
    hits = np.zeros((4, 4))
    np.add.at(hits, (want, y.numpy()), 1)
    rows_, cols = linear_sum_assignment(-hits)
    assert hits[rows_, cols].sum() == len(y)


def test_it_is_granted_its_own_activations_only():
    tm = ATTACKS.get("cluster-activations").threat_model
    assert tm.describe() == "sent_activations"
    inputs = AttackInputs((1, 8, 8), 1.0, 4, seed=0, gradients=_synthetic()[2])
    with pytest.raises(Exception, match="needs sent_activations"):
        ATTACKS.get("cluster-activations")().run(inputs)


@pytest.fixture(scope="module")
def digits10(tmp_path_factory):
    out = tmp_path_factory.mktemp("cluster-act") / "run"
    cfg = TrainConfig(
        dataset="digits", epochs=4, max_train=300, record_samples=128, dcor_samples=50
    )
    train(cfg, out, quiet=True)
    return out


def test_the_smashed_data_of_a_trained_client_leak_its_labels(digits10):
    result = run_attack(digits10, "cluster-activations", write=False)
    assert result.threat_model == "sent_activations"
    # chance: accuracy 0.1 and leak 0 (the mean guess); measured 0.87 and 0.90
    assert result.accuracy > 0.35 and result.leak > 0.5
