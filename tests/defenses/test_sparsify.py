"""Gradient sparsification keeps exactly the top-k entries of the gradient it sends back."""

import math

import numpy as np
import pytest
import torch

from nopeek.defenses import DEFENSES, GradientSparsification, parse_defenses
from nopeek.defenses.sparsify import sparsify
from nopeek.errors import ConfigError


def _grads(n=30, d=50, seed=0):
    return torch.randn((n, d), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("keep", [0.01, 0.1, 0.37, 1.0])
def test_per_sample_keeps_exactly_the_k_largest_entries_of_every_row(keep):
    g = _grads()
    out = sparsify(g, keep=keep, per="sample")
    k = max(1, math.ceil(keep * g.shape[1]))
    for row, kept in zip(g.numpy(), out.numpy()):
        top = set(np.argsort(-np.abs(row))[:k].tolist())  # numpy's ranking, the reference
        assert set(np.flatnonzero(kept).tolist()) == top
        assert np.array_equal(kept[list(top)], row[list(top)])  # kept entries unchanged


def test_per_batch_keeps_the_k_largest_entries_of_the_whole_batch():
    g = _grads()
    out = sparsify(g, keep=0.05, per="batch")
    k = math.ceil(0.05 * g.numel())
    kept = out != 0
    assert int(kept.sum()) == k
    assert float(g.abs()[kept].min()) >= float(g.abs()[~kept].max())
    assert torch.equal(out[kept], g[kept])


def test_the_hook_sends_the_sparse_gradient_exactly_and_only_at_the_label_party(bare_ctx):
    hook = GradientSparsification(keep=0.1)
    hook.setup(bare_ctx())
    g = _grads().float().reshape(30, 2, 5, 5)
    y = torch.arange(30) % 3
    sent = hook.backward("c", g, activation=g, labels=y)
    assert torch.equal(sent.flatten(1), sparsify(g.flatten(1), keep=0.1, per="sample"))
    assert torch.equal(hook.backward("c", g, activation=g, labels=None), g)  # no labels held
    m = hook.metrics()
    assert m["grad_sparsify_keep"] == 0.1 and m["grad_sparsify_per"] == "sample"
    removed = (g.flatten(1) - sent.flatten(1)).double().pow(2).sum(1).mean()
    assert m["grad_sparsify_noise_power"] == pytest.approx(float(removed))


def test_registered_with_a_positional_keep_and_checked_values():
    assert DEFENSES.get("grad-sparsify") is GradientSparsification
    assert [h.spec() for h in parse_defenses(["grad-sparsify:0.2,per=batch"])] == [
        "grad-sparsify:keep=0.2,per=batch"
    ]
    for spec, match in [
        ("grad-sparsify:keep=0", "keep must be a finite number > 0"),
        ("grad-sparsify:keep=1.5", r"keep is the fraction kept, in \(0, 1\]"),
        ("grad-sparsify:per=row", "per must be one of sample, batch"),
    ]:
        with pytest.raises(ConfigError, match=match) as err:
            parse_defenses([spec])
        assert "\n" not in str(err.value)
