"""DCAE: CAE's fake labels (the same autoencoder) and DiscreteSGD on the gradient sent back."""

import numpy as np
import pytest
import torch

from nopeek.defenses import CAE, DCAE, parse_defenses
from nopeek.defenses.dcae import discretise
from nopeek.errors import ConfigError


def _setup(hook, bare_ctx, k=10, seed=0):
    hook.setup(bare_ctx(seed=seed, extra={"n_classes": k}))
    return hook


def test_discretise_matches_the_reference_rounding():
    """VFLAIR's multistep_gradient in numpy: round(g / (2B / bins)) * 2B / bins, clipped."""
    g = torch.randn(64, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for bins, bound in [(12, None), (4, None), (12, 0.5), (3, 2.0)]:
        b = float(np.abs(g.numpy()).max()) if bound is None else bound
        step = 2 * b / bins
        want = np.clip(np.round(g.numpy() / step), -(bins // 2), bins // 2) * step
        got = discretise(g, bins=bins, bound=bound)
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
        assert len(torch.unique(got)) <= bins + 1
    assert torch.equal(discretise(torch.zeros(3), bins=12), torch.zeros(3))


def test_dcae_is_cae_with_the_gradient_quantised(bare_ctx):
    cae = _setup(CAE(steps=300), bare_ctx)
    dcae = _setup(DCAE(steps=300, bins=6), bare_ctx)
    for p, q in zip(cae.autoencoder.parameters(), dcae.autoencoder.parameters()):
        assert torch.equal(p, q)  # the same seeded stream: the same E and D
    y = torch.arange(10)
    assert torch.equal(dcae.targets(y, ids=y, n_classes=10), cae.targets(y, ids=y, n_classes=10))
    g = torch.randn(10, 4, 3, generator=torch.Generator().manual_seed(0))
    sent = dcae.backward("c", g, activation=g, labels=y)
    assert torch.equal(sent, discretise(g, bins=6)) and sent.shape == g.shape
    assert torch.equal(dcae.backward("c", g, activation=g, labels=None), g)  # not a label party
    m = dcae.metrics()
    assert m["dcae_bins"] == 6 and m["dcae_decoder_accuracy"] == cae.round_trip()[0]
    want = float((sent - g).pow(2).sum() / g.pow(2).sum())
    assert m["dcae_quantisation_error"] == pytest.approx(want)
    assert m["dcae_zero_share"] == pytest.approx(float((sent == 0).float().mean()))


def test_quantisation_collapses_a_class_onto_few_gradients(bare_ctx):
    """p - E(onehot(y)) with slightly different p per example: distinct rows before, few after."""
    dcae = _setup(DCAE(steps=300, bins=4), bare_ctx)
    y = torch.arange(10).repeat(20)
    fake = dcae.targets(y, ids=torch.arange(200), n_classes=10)
    p = torch.full((200, 10), 0.1) + 0.01 * torch.rand(200, 10, generator=torch.Generator())
    g = p / p.sum(1, keepdim=True) - fake
    sent = dcae.backward("logits", g, activation=g, labels=y)
    assert len(torch.unique(g, dim=0)) == 200
    assert len(torch.unique(sent, dim=0)) <= 40


@pytest.mark.parametrize(
    "specs,match",
    [
        (["dcae:bins=1.5"], "dcae bins must be a whole number >= 2, got 1.5"),
        (["dcae:bins=1"], "dcae bins must be a whole number >= 2"),
        (["dcae:bound=0"], "dcae bound must be a finite number > 0"),
        (["dcae:steps=2.5"], "dcae steps must be a whole number"),
        (["cae", "dcae"], "give one of cae and dcae"),
    ],
)
def test_bad_dcae_specs_are_one_line(specs, match):
    with pytest.raises(ConfigError, match=match):
        parse_defenses(specs)


def test_a_dcae_run_trains_and_reports(defended_run):
    metrics = defended_run("dcae:steps=1500")
    m = metrics
    assert m["dcae_decoder_accuracy"] == 1.0 and m["dcae_bins"] == 12
    assert 0 < m["dcae_quantisation_error"] < 1 and 0 < m["dcae_zero_share"] < 1
    assert m["test_accuracy"] > 0.2  # above the 0.1 of a constant guess
