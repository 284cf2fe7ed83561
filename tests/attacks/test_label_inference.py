"""Direct label inference and clustering label inference, against direct computations."""

import pytest
import torch
from torch import nn

from nopeek import TrainConfig
from nopeek.attacks import ATTACKS, AttackInputs, ThreatModel, run_attack
from nopeek.attacks.label_cluster import ClusterAttack
from nopeek.attacks.label_direct import DirectLabelAttack, direct_labels
from nopeek.attacks.metrics import label_report
from nopeek.errors import ConfigError, ThreatModelError
from nopeek.observe import Observed
from nopeek.training.trainer import train


def _observed(g, epochs=1):
    m = len(g)
    ids = torch.arange(m).repeat(epochs)
    epoch = torch.arange(epochs).repeat_interleave(m)
    return Observed(g.repeat(epochs, *[1] * (g.dim() - 1)), ids, epoch, torch.zeros_like(ids))


def _inputs(g, k, **grants):
    return AttackInputs(
        input_shape=(4,), data_range=1.0, n_classes=k, seed=0, gradients=_observed(g), **grants
    )


def _softmax_ce_grads(y, k, seed=0):
    """d mean CE / d logits for random logits: (p - onehot(y)) / N."""
    logits = torch.randn(len(y), k, generator=torch.Generator().manual_seed(seed))
    logits.requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(logits, y), logits)
    return g


@pytest.mark.parametrize("k", [2, 10])
def test_direct_label_recovers_every_label_from_p_minus_onehot(k):
    y = torch.arange(200) % k
    g = _softmax_ce_grads(y, k)
    assert torch.equal(direct_labels(g), y)
    out = DirectLabelAttack().run(_inputs(g, k, tail_architecture=nn.Identity))
    report = label_report({0: y}, out.scores, out.predicted, n_classes=k)
    assert report["accuracy"] == 1.0 and report["auc"] == 1.0
    assert out.extra["rows_with_one_negative_entry"] == 1.0


def test_direct_label_refuses_features_and_a_top_model_in_one_line():
    g = torch.randn(8, 16)
    with pytest.raises(ThreatModelError, match="carries 16 values, not the 10 logits") as err:
        DirectLabelAttack().run(_inputs(g, 10, tail_architecture=nn.Identity))
    assert "\n" not in str(err.value)
    with pytest.raises(ThreatModelError, match="110 trainable parameters"):
        DirectLabelAttack().run(
            _inputs(torch.randn(8, 10), 10, tail_architecture=lambda: nn.Linear(10, 10))
        )
    assert DirectLabelAttack.threat_model == ThreatModel(gradients=True, tail_architecture=True)


def _separated(k, m=90, seed=0):
    """Gradients of k classes in k orthogonal directions, scaled and slightly jittered."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(m) % k
    g = torch.eye(k)[y] * torch.rand(m, 1, generator=gen).add(0.5)
    return g + 0.01 * torch.randn(m, k, generator=gen), y


@pytest.mark.parametrize("k,metric", [(3, "cosine"), (5, "euclidean"), (2, "cosine")])
def test_clustering_perfectly_separated_gradients_gets_auc_1(k, metric):
    g, y = _separated(k)
    out = ClusterAttack(metric=metric).run(_inputs(g, k))
    perm = out.extra["classes_up_to_permutation"]
    report = label_report({0: y}, out.scores, out.predicted, n_classes=k, up_to_permutation=perm)
    folded = max(report["auc"], 1 - report["auc"])  # binary: a cluster is named, maybe backwards
    assert folded == 1.0 and report["accuracy"] in ((1.0,) if k > 2 else (0.0, 1.0))


def test_cluster_refuses_too_few_gradients_and_bad_options():
    with pytest.raises(ThreatModelError, match="at least 10 observed gradients"):
        ClusterAttack().run(_inputs(torch.randn(4, 3), 10))
    with pytest.raises(ConfigError, match="metric='manhattan' is invalid"):
        ClusterAttack(metric="manhattan").run(_inputs(torch.randn(4, 3), 2))


@pytest.fixture(scope="module")
def vertical_logits(tmp_path_factory):
    """Vertical digits, labels at client0: the server sends the logits across cut 'logits'."""
    out = tmp_path_factory.mktemp("direct") / "run"
    cfg = TrainConfig(
        dataset="digits",
        topology="vertical",
        label_party="client0",
        epochs=2,
        max_train=200,
        record_samples=64,
        dcor_samples=50,
    )
    train(cfg, out, quiet=True)
    return out


def test_direct_label_on_a_vertical_run_with_labels_at_a_client_is_exact(vertical_logits):
    result = run_attack(vertical_logits, "direct-label", cut="logits", write=False)
    assert result.accuracy == 1.0 and result.leak == 1.0
    assert result.receiver == "client0" and result.party == "server"


@pytest.fixture(scope="module")
def digits10(tmp_path_factory):
    out = tmp_path_factory.mktemp("cluster") / "run"
    train(
        TrainConfig(dataset="digits", epochs=2, max_train=200, record_samples=128, dcor_samples=50),
        out,
        quiet=True,
    )
    return out


def test_cluster_leaks_multiclass_digits_where_norm_cannot_run(digits10):
    with pytest.raises(ConfigError, match="norm attack scores binary labels"):
        run_attack(digits10, "norm", write=False)
    result = run_attack(digits10, "cluster", write=False)
    assert result.leak > 0.5 and result.accuracy > 0.5  # chance: 0.1 (measured 1.0 and 1.0)
    with pytest.raises(ThreatModelError, match="cut at the logits") as err:
        run_attack(digits10, "direct-label", write=False)
    assert "\n" not in str(err.value)
    assert ATTACKS.get("direct-label").refusal(TrainConfig()) is not None
