"""Label inference (norm, direction, grad-match) on real split-training runs.

Attacks get only what their threat model grants; every score is checked here against the data
set's labels by sample id with sklearn's ``roc_auc_score`` (and scipy's Hungarian matching for
labels known only up to a renaming of the classes).
"""

from itertools import permutations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import roc_auc_score

from nopeek import TrainConfig
from nopeek.attacks import ATTACKS, AttackInputs, ThreatModel
from nopeek.attacks.base import LABEL
from nopeek.attacks.label import (
    DirectionAttack,
    GradMatchAttack,
    NormAttack,
    best_permutation,
)
from nopeek.data import load_dataset
from nopeek.errors import ConfigError, ThreatModelError
from nopeek.models import build_model, split
from nopeek.observe import Observed
from nopeek.training.trainer import train


def _run(**overrides):
    base = dict(dataset="digits", epochs=10, seed=0, dcor_samples=200, device="cpu")
    return train(TrainConfig(**(base | overrides)), quiet=True)


@pytest.fixture(scope="module")
def digits_early():
    """Digit 0 vs rest (10% positives), 4 epochs: the positives are not learned yet."""
    return _run(one_vs_rest=0, epochs=4)


@pytest.fixture(scope="module")
def digits_binary():
    """Digit 0 vs rest, 10 epochs: the task is learned (test accuracy 1.0)."""
    return _run(one_vs_rest=0)


@pytest.fixture(scope="module")
def cancer_malignant():
    """Breast cancer, malignant (class 0, 37%) as label 1, MLP cut at fc1."""
    return _run(dataset="breast-cancer", one_vs_rest=0, epochs=20)


@pytest.fixture(scope="module")
def u_digits():
    """U-shaped digits, 10 classes: the server sends fc1 and gets gradients from the fc2 tail."""
    return _run(topology="u-shaped", cut="conv2,fc1", epochs=5)


def _inputs(result, threat: ThreatModel, **options) -> AttackInputs:
    """What ``threat`` grants at the run's last cut, and nothing else."""
    cfg, ds, obs = result.config, result.dataset, result.observations
    cut = result.topology.cuts()[-1]
    grant = {}
    if threat.gradients:
        grant["gradients"] = obs.get(cut=cut, direction="backward", phase="train")
    if threat.sent_activations:
        grant["sent_activations"] = obs.get(cut=cut, direction="forward", phase="train")
    if threat.tail_architecture:
        shape, k = ds.input_shape, ds.n_classes
        grant["tail_architecture"] = lambda: split(
            build_model(cfg.model, input_shape=shape, n_classes=k), cfg.cuts
        )[-1]
    return AttackInputs(
        input_shape=ds.input_shape,
        data_range=ds.data_range,
        n_classes=ds.n_classes,
        seed=cfg.seed,
        options=options,
        **grant,
    )


def _attack(result, attack, **options):
    return attack.run(_inputs(result, attack.threat_model, **options))


def _labels(split_, ids):
    where = {int(i): k for k, i in enumerate(split_.ids)}
    return split_.y[[where[int(i)] for i in ids]].numpy()


def _aucs(out, split_) -> list[float]:
    """AUC per epoch, in epoch order, against ``split_``'s labels by id."""
    return [
        roc_auc_score(_labels(split_, out.ids[e]), out.scores[e].numpy()) for e in sorted(out.ids)
    ]


def test_registered_with_their_threat_models():
    assert ATTACKS.get("norm") is NormAttack and ATTACKS.get("direction") is DirectionAttack
    assert ATTACKS.get("grad-match") is GradMatchAttack
    for cls in (NormAttack, DirectionAttack):
        assert cls.kind == LABEL and cls.threat_model == ThreatModel(gradients=True)
    assert GradMatchAttack.threat_model.describe() == (
        "gradients+sent_activations+tail_architecture"
    )


def test_norm_ranks_the_unlearned_minority_first(digits_early):
    out = _attack(digits_early, NormAttack())
    aucs = _aucs(out, digits_early.dataset.train)
    assert len(aucs) == 4
    assert aucs[-1] >= 0.9  # measured 1.00


def test_direction_on_learned_digits(digits_binary):
    assert digits_binary.metrics["test_accuracy"] > 0.95  # beyond the 0.9 majority baseline
    train_split = digits_binary.dataset.train
    for reference in ("principal", "example"):
        aucs = _aucs(_attack(digits_binary, DirectionAttack(), reference=reference), train_split)
        assert len(aucs) == 10 and min(aucs) >= 0.9  # measured 1.00 in every epoch


def test_direction_on_breast_cancer(cancer_malignant):
    train_split = cancer_malignant.dataset.train
    assert _aucs(_attack(cancer_malignant, DirectionAttack()), train_split)[-1] >= 0.9
    # the norm attack is far weaker here (measured 0.43 in the final epoch): not asserted


def test_orientation_follows_the_positive_option():
    """Raw breast cancer: label 1 = benign, the majority. The minority prior flips the AUC."""
    result = _run(dataset="breast-cancer", epochs=10)
    train_split = result.dataset.train
    assert _aucs(_attack(result, DirectionAttack()), train_split)[-1] <= 0.1
    majority = _attack(result, DirectionAttack(positive="majority"))
    assert _aucs(majority, train_split)[-1] >= 0.9
    with pytest.raises(ConfigError, match="positive"):
        _attack(result, NormAttack(), positive="rare")


def test_shuffled_labels_leak_themselves_not_the_true_ones():
    """Gradients carry the labels that train the model, whatever they are: scored against the
    shuffled training labels the attacks stay near 1; against the original labels (which the
    gradients never saw) they are at chance."""
    result = _run(one_vs_rest=0, shuffle_labels=True, epochs=6)
    original = load_dataset("digits", seed=0, one_vs_rest=0).train
    for attack in (NormAttack(), DirectionAttack()):
        out = _attack(result, attack)
        assert _aucs(out, result.dataset.train)[-1] >= 0.9
        assert 0.35 <= float(np.mean(_aucs(out, original))) <= 0.65


def test_scores_follow_each_examples_own_gradient(digits_binary):
    """Detach the gradients from their ids (a random permutation): the AUC drops to chance."""
    inputs = _inputs(digits_binary, DirectionAttack.threat_model)
    g = inputs.gradients
    perm = torch.randperm(len(g.ids), generator=torch.Generator().manual_seed(1))
    inputs.gradients = Observed(g.tensor[perm], g.ids, g.epoch[perm], g.step[perm])
    for attack in (NormAttack(), DirectionAttack()):
        aucs = _aucs(attack.run(inputs), digits_binary.dataset.train)
        assert 0.3 <= float(np.mean(aucs)) <= 0.7


def test_norm_and_direction_refuse_multiclass():
    g = Observed(torch.randn(8, 4), torch.arange(8), torch.zeros(8), torch.zeros(8))
    inputs = AttackInputs(input_shape=(4,), data_range=1.0, n_classes=10, seed=0, gradients=g)
    for attack in (NormAttack(), DirectionAttack()):
        with pytest.raises(ConfigError, match="one-vs-rest"):
            attack.run(inputs)


def test_grad_match_groups_u_shaped_labels(u_digits):
    """10 classes: labels come out in the clone's own class indices (a permutation of the truth
    leaves every gradient unchanged), so accuracy is scored after the best relabelling."""
    out = _attack(u_digits, GradMatchAttack())
    (epoch,) = out.predicted
    assert epoch == 4 and out.extra["classes_up_to_permutation"]
    truth = _labels(u_digits.dataset.train, out.ids[epoch])
    pred = out.predicted[epoch].numpy()
    confusion = np.zeros((10, 10))
    np.add.at(confusion, (pred, truth), 1)
    rows, cols = linear_sum_assignment(-confusion)
    assert confusion[rows, cols].sum() / len(truth) >= 0.9  # measured 1.00; chance ~0.1
    assert out.scores[epoch].shape == (len(truth), 10)


def test_grad_match_binary_u_shaped():
    result = _run(topology="u-shaped", cut="conv2,fc1", one_vs_rest=0, epochs=5)
    out = _attack(result, GradMatchAttack())
    (epoch,) = out.predicted
    truth = _labels(result.dataset.train, out.ids[epoch])
    assert (out.predicted[epoch].numpy() == truth).mean() >= 0.9  # measured 1.00
    assert roc_auc_score(truth, out.scores[epoch].numpy()) >= 0.9


def test_grad_match_needs_what_it_declares(u_digits):
    inputs = _inputs(u_digits, ThreatModel(gradients=True, tail_architecture=True))
    with pytest.raises(ThreatModelError, match="sent_activations"):
        GradMatchAttack().run(inputs)
    inputs = _inputs(u_digits, GradMatchAttack.threat_model)
    inputs.tail_architecture = lambda: torch.nn.Linear(64, 3)
    with pytest.raises(ThreatModelError, match="last cut"):
        GradMatchAttack().run(inputs)


def test_best_permutation_matches_brute_force():
    rng = np.random.default_rng(0)
    y_true = torch.as_tensor(rng.integers(0, 4, size=60))
    y_pred = torch.as_tensor((y_true.numpy() + rng.integers(0, 2, size=60)) % 4)
    perm = best_permutation(y_true, y_pred, 4)
    best = max((torch.as_tensor(p)[y_pred] == y_true).sum().item() for p in permutations(range(4)))
    assert (perm[y_pred] == y_true).sum().item() == best
