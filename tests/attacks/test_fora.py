"""FORA (Xu et al., CVPR 2024): a substitute client fitted to the observed messages' distribution,
then inverted; no query access, weights or architecture."""

import pytest
import torch

from nopeek import TrainConfig, train
from nopeek.attacks import run_attack
from nopeek.attacks.fora import build_critic, build_substitute, mk_mmd


def test_mk_mmd_against_a_direct_sum():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 3, generator=gen), torch.randn(7, 3, generator=gen) + 1
    z = torch.cat([a, b]).double()
    d2 = [[float(((z[i] - z[j]) ** 2).sum()) for j in range(12)] for i in range(12)]
    m = sum(map(sum, d2)) / 144

    def k(i, j):
        scales = (1 / 8, 1 / 4, 1 / 2, 1, 2)
        return sum(torch.exp(torch.tensor(-d2[i][j] / (2 * s * m))) for s in scales)

    def mean(rows, cols):
        return sum(float(k(i, j)) for i in rows for j in cols) / (len(rows) * len(cols))

    first, second = range(5), range(5, 12)
    want = mean(first, first) + mean(second, second) - 2 * mean(first, second)
    assert float(mk_mmd(a, b)) == pytest.approx(want, rel=1e-5)
    assert float(mk_mmd(a, a)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("cut", [(16, 4, 4), (64,)])
def test_substitute_and_critic_shapes(cut):
    sub = build_substitute((1, 8, 8), cut, width=8, nonneg=True)
    z = sub(torch.rand(3, 1, 8, 8))
    assert tuple(z.shape) == (3, *cut) and bool((z >= 0).all())
    assert tuple(build_critic(cut, width=8)(z).shape) == (3,)


def test_fora_reconstructs_digits_without_queries(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(dataset="digits", cut="conv2", epochs=8, dcor_samples=120), out, quiet=True)
    result = run_attack(out, "fora", steps=400, write=False)
    assert result.threat_model == "activations+aux_data"
    assert result.leak > 0.3 and result.ssim > result.baseline_ssim + 0.2
    assert result.settings["substitute_mmd"] < 0.5
