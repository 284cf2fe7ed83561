"""mixup at the label party: mixed received activations and labels, so gradients mix classes."""

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import beta

from nopeek import TrainConfig
from nopeek.defenses import Mixup, parse_defenses
from nopeek.defenses.mixup import mix
from nopeek.errors import ConfigError
from nopeek.training.trainer import train


def _step(hook, z, y, k):
    """One training step at the label party: receive, a linear head, the loss on the targets;
    returns the gradient sent back for z and the targets."""
    z = z.clone().requires_grad_(True)
    zt, _ = hook.receive("cut", z, sender="client", training=True)
    w = torch.eye(z.shape[1], k)
    target = hook.targets(y, ids=torch.arange(len(y)), n_classes=k)
    F.cross_entropy(zt @ w, target, reduction="sum").backward()
    return z.grad, target


def test_the_gradient_is_that_of_the_mixed_batch_computed_directly(bare_ctx):
    hook = Mixup(lam=0.7, inputs=True)
    hook.setup(bare_ctx())
    z, y = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 4
    g, target = _step(hook, z, y, 4)
    onehot = F.one_hot(y, 4).float()
    partner = (target - 0.7 * onehot).argmax(1)  # each row mixes its label with one partner's
    assert torch.allclose(target, 0.7 * onehot + 0.3 * F.one_hot(partner, 4).float())
    # direct computation with the hook's draws replayed: same seed, same stream
    again = Mixup(lam=0.7, inputs=True)
    again.setup(bare_ctx())
    lam, p = again._draw(8, z.device)
    zz = z.clone().requires_grad_(True)
    mixed = mix(zz, lam, p)
    want_target = mix(onehot, lam, p)
    F.cross_entropy(mixed @ torch.eye(4, 4), want_target, reduction="sum").backward()
    assert lam == 0.7 and torch.allclose(target, want_target) and torch.allclose(g, zz.grad)


def test_mixed_gradients_no_longer_name_the_class(bare_ctx):
    """Logit gradients p - t: undefended, the most negative entry is the label for every row;
    with labels-only mixup at lam=0.5 each row's two classes tie, so it is right only by luck."""
    k, n = 10, 400
    y = torch.arange(n) % k
    z = torch.zeros(n, k)  # uniform predictions: the gradient is 1/k - target
    plain = torch.softmax(z, 1) - F.one_hot(y, k).float()
    assert float((plain.argmin(1) == y).float().mean()) == 1.0
    hook = Mixup(lam=0.5)  # the default: labels only
    hook.setup(bare_ctx())
    g, _ = _step(hook, z, y, k)
    hit = float((g.argmin(1) == y).float().mean())
    assert 0.3 < hit < 0.7  # ties broken by position: about half
    m = hook.metrics()
    assert m["mixup_lam"] == 0.5 and m["mixup_inputs"] is False
    assert m["mixup_other_class_share"] == pytest.approx(0.9, abs=0.05)  # 1 - 1/k


def test_beta_draws_follow_the_distribution_and_the_seed(bare_ctx):
    hook = Mixup(alpha=0.4)
    hook.setup(bare_ctx(seed=3))
    lams = [hook._draw(4, torch.device("cpu"))[0] for _ in range(2000)]
    assert beta.cdf(0.5, 0.4, 0.4) == pytest.approx(0.5)
    from scipy.stats import kstest

    assert kstest(lams, beta(0.4, 0.4).cdf).pvalue > 0.01
    again = Mixup(alpha=0.4)
    again.setup(bare_ctx(seed=3))
    assert [again._draw(4, torch.device("cpu"))[0] for _ in range(5)] == lams[:5]


def test_evaluation_is_not_mixed(bare_ctx):
    hook = Mixup(inputs=True)
    hook.setup(bare_ctx())
    z = torch.randn(5, 3)
    assert hook.receive("cut", z, sender="c", training=False)[0] is z


@pytest.mark.parametrize(
    "spec,match",
    [
        ("mixup:lam=1", "mixup lam must be in \\(0, 1\\), got 1.0"),
        ("mixup:lam=0.5,alpha=1", "mixup takes lam \\(fixed\\) or alpha \\(drawn\\), not both"),
        ("mixup:alpha=0", "mixup alpha must be a finite number > 0"),
        ("mixup:inputs=maybe", "inputs must be true or false"),
    ],
)
def test_bad_mixup_specs_are_one_line(spec, match):
    with pytest.raises(ConfigError, match=match):
        parse_defenses([spec])


def test_labels_only_mixup_needs_no_received_activation_but_inputs_mixup_does(bare_ctx):
    hook = Mixup(inputs=True)
    hook.setup(bare_ctx())
    with pytest.raises(ConfigError, match="received no activation before its loss"):
        hook.targets(torch.tensor([0, 1]), ids=None, n_classes=2)
    labels_only = Mixup()
    labels_only.setup(bare_ctx())
    t = labels_only.targets(torch.tensor([0, 1]), ids=None, n_classes=2)
    assert torch.allclose(t.sum(1), torch.ones(2)) and bool((t >= 0.5).any(1).all())


def test_a_mixup_run_trains_and_reports(defended_run):
    metrics = defended_run("mixup:alpha=1,inputs=true")
    m = metrics
    assert m["mixup_alpha"] == 1.0 and m["mixup_inputs"] is True
    assert 0.3 < m["mixup_mean_lambda"] < 0.7  # Beta(1, 1): mean 0.5
    assert m["test_accuracy"] > 0.2  # above the 0.1 of a constant guess


@pytest.mark.parametrize("topology,cut", [("vertical", ""), ("u-shaped", "conv2,fc1")])
def test_mixup_of_what_is_received_trains_on_other_topologies(tmp_path, topology, cut):
    """Vertical: the server mixes both clients' activations with one draw; u-shaped: the client's
    tail mixes what the server body returns."""
    cfg = TrainConfig(
        dataset="digits",
        topology=topology,
        cut=cut,
        epochs=2,
        max_train=200,
        record_samples=16,
        dcor_samples=50,
        defenses=["mixup:inputs=true"],
    )
    m = train(cfg, tmp_path / "run", quiet=True).metrics
    assert m["mixup_inputs"] is True and m["mixup_mean_lambda"] == 0.5
    assert m["mixup_other_class_share"] > 0.5  # about 1 - 1/10 of the rows pair two classes
