"""MID: a variational bottleneck on what the label party receives, its KL in the loss."""

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from nopeek import TrainConfig
from nopeek.defenses import MID, parse_defenses
from nopeek.defenses.mid import gaussian_kl
from nopeek.errors import ConfigError
from nopeek.training.trainer import train


def test_gaussian_kl_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(7, 5, generator=gen), torch.randn(7, 5, generator=gen)
    q = Normal(mu, (0.5 * logvar).exp())
    reference = kl_divergence(q, Normal(torch.zeros(5), torch.ones(5))).sum(1).mean()
    assert torch.allclose(gaussian_kl(mu, logvar), reference, atol=1e-6)


def test_receive_returns_the_decoded_sample_and_weight_times_kl(bare_ctx):
    hook = MID(weight=0.3, dim=4)
    hook.setup(bare_ctx())
    z = torch.randn(6, 2, 3, 3)
    out, term = hook.receive("conv2", z, sender="client", training=True)
    net = hook.nets["conv2|client"]
    assert out.shape == z.shape and net.dim == 4
    mu, s = net.encoder(z.flatten(1)).chunk(2, dim=1)
    logvar = 2 * torch.nn.functional.softplus(s - 0.5).log()  # the reference's sigma
    assert torch.allclose(term, 0.3 * gaussian_kl(mu, logvar))
    eval_out, eval_term = hook.receive("conv2", z, sender="client", training=False)
    assert eval_term is None  # no loss outside training
    assert torch.allclose(eval_out, net.decoder(mu).reshape(z.shape))  # t = mu: no sampling


def test_one_bottleneck_per_sender_and_a_step_after_the_backward_pass(bare_ctx):
    hook = MID()
    hook.setup(bare_ctx())
    za, zb = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    (oa, ta), (ob, tb) = (
        hook.receive("c", z, sender=s, training=True) for z, s in ((za, "client0"), (zb, "client1"))
    )
    assert sorted(hook.nets) == ["c|client0", "c|client1"] and hook.nets["c|client0"].dim == 8
    before = [p.detach().clone() for p in hook.nets["c|client1"].parameters()]
    (oa.sum() + ob.sum() + ta + tb).backward()
    assert za.grad is not None and zb.grad is not None  # the gradient flows into what arrived
    hook.backward("c", za.grad, activation=za.detach(), labels=torch.zeros(4))
    after = list(hook.nets["c|client1"].parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_options_are_checked():
    assert [h.spec() for h in parse_defenses(["mid:0.5,dim=16"])] == ["mid:weight=0.5,dim=16"]
    with pytest.raises(ConfigError, match="mid dim is a number of dimensions"):
        parse_defenses(["mid:dim=2.5"])
    with pytest.raises(ConfigError, match="weight must be a finite number > 0"):
        parse_defenses(["mid:weight=-1"])


def test_a_mid_run_trains_its_bottleneck_and_resumes_exactly(tmp_path, interrupt):
    cfg = TrainConfig(
        dataset="digits",
        epochs=2,
        max_train=128,
        record_samples=16,
        dcor_samples=50,
        defenses=["mid:weight=0.01"],
    )
    straight = train(cfg, tmp_path / "a", quiet=True)
    assert straight.metrics["mid_kl"] > 0 and straight.metrics["mid_dim"] == 64
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", hooks=[interrupt(1, steps=2)], quiet=True)
    resumed = train(cfg, tmp_path / "b", hooks=[interrupt(None)], resume=True, quiet=True)
    assert resumed.metrics["test_accuracy"] == straight.metrics["test_accuracy"]
    assert resumed.metrics["mid_kl"] == straight.metrics["mid_kl"]
