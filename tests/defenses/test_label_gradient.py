"""Label-gradient defenses: max-norm equalizes expected norms, isotropic noise has its scale."""

import pytest
import torch
from scipy import stats

from nopeek.defenses import DEFENSES, IsotropicNoise, MaxNorm, MaxNormMult
from nopeek.defenses.label_gradient import class_stats, max_norm_power, max_norm_stds
from nopeek.errors import ConfigError


def _grads(n=40, shape=(8, 2, 2), seed=0):
    gen = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-2, 0, n).reshape(-1, *[1] * len(shape))
    return torch.randn((n, *shape), generator=gen) * scale, torch.arange(n) % 2


def _apply(hook, g, y, repeats):
    return torch.stack([hook.backward("c", g, activation=g, labels=y) for _ in range(repeats)])


def _with_zero_rows(zeros=(0, 7, 13)):
    """Gradients as _grads, with some rows exactly zero (a server ReLU off for a whole class)."""
    g, y = _grads()
    g = g.double()
    g[list(zeros)] = 0.0
    return g, y, list(zeros)


def test_max_norm_is_additive_with_expected_squared_norm_the_batch_maximum_exactly():
    g, _, zeros = _with_zero_rows()
    flat = g.reshape(len(g), -1)
    d, sq = flat.shape[1], flat.pow(2).sum(1)
    sigma = max_norm_stds(flat)
    # E||g_i + n_i||^2 = ||g_i||^2 + d sigma_i^2 for n_i ~ N(0, sigma_i^2 I_d)
    assert torch.allclose(sq + d * sigma**2, sq.max().expand(len(g)), rtol=1e-12)
    assert bool((sigma[zeros] > 0).all())  # a zero row gets the most noise
    assert float(sigma[int(sq.argmax())]) == 0.0  # the largest row gets none


def test_max_norm_monte_carlo_norms_match_the_maximum_and_zero_rows_get_noise(bare_ctx):
    g, y, zeros = _with_zero_rows()
    hook = MaxNorm()
    hook.setup(bare_ctx())
    repeats = 3000
    out = _apply(hook, g, y, repeats).reshape(repeats, len(g), -1)
    flat = g.reshape(len(g), -1)
    d, sq = flat.shape[1], flat.pow(2).sum(1)
    target = float(sq.max())
    sigma2 = (target - sq) / d
    # ||g + n||^2 has mean ||g||^2 + d s^2 and variance 4 s^2 ||g||^2 + 2 d s^4 (noncentral chi2)
    se = ((4 * sigma2 * sq + 2 * d * sigma2**2) / repeats).sqrt()
    mean_sq = out.pow(2).sum(2).mean(0)
    assert bool(((mean_sq - target).abs() <= 5 * se + 1e-12).all())
    assert bool((out[:, zeros].abs().sum(2) > 0).all())  # every draw of a zero row is noised
    noise = (out - flat).reshape(repeats, len(g), -1)
    # the noise is isotropic, not along g: per coordinate its variance is sigma_i^2
    var = noise.pow(2).mean(0)  # (N, d)
    rel = (var / sigma2.clamp_min(1e-30).unsqueeze(1))[sigma2 > 0]
    assert float((rel - 1).abs().max()) < 0.2  # 3000 draws of chi2(1): 5 sigma = 0.13
    m = hook.metrics()
    assert m["max_norm_power_budget"] == pytest.approx(max_norm_power(flat))
    assert m["max_norm_noise_power"] == pytest.approx(max_norm_power(flat), rel=0.03)


def test_max_norm_mult_equalizes_expected_squared_norms_and_keeps_directions(bare_ctx):
    g, y = _grads()
    hook = MaxNormMult()
    hook.setup(bare_ctx())
    out = _apply(hook, g, y, repeats=4000).reshape(4000, len(g), -1)
    flat = g.reshape(len(g), -1)
    target = float(flat.pow(2).sum(1).max())
    mean_sq = out.pow(2).sum(2).mean(0)  # (N,) expected squared norm of each row
    # each row: ||g_i||^2 (1 + sigma_i^2 xi^2) averaged over 4000 draws; 4000 draws of chi2(1)
    # scaled by sigma^2 give a relative standard error of about sqrt(2 / 4000) = 2.2%
    assert torch.allclose(mean_sq, torch.full_like(mean_sq, target), rtol=0.1)
    assert abs(float(mean_sq.mean()) / target - 1) < 0.02
    cos = torch.nn.functional.cosine_similarity(out, flat.expand_as(out), dim=2).abs()
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-4)  # noise is along g_i itself
    m = hook.metrics()
    assert m["max_norm_mult_power_budget"] == pytest.approx(max_norm_power(flat))
    assert m["max_norm_mult_noise_power"] == pytest.approx(max_norm_power(flat), rel=0.03)


def test_max_norm_mult_leaves_zero_rows_at_zero_and_is_registered(bare_ctx):
    g, y, zeros = _with_zero_rows()
    hook = MaxNormMult()
    hook.setup(bare_ctx())
    out = hook.backward("c", g, activation=g, labels=y)
    assert bool((out[zeros] == 0).all())
    assert DEFENSES.get("max-norm") is MaxNorm and DEFENSES.get("max-norm-mult") is MaxNormMult


def test_label_defenses_act_only_for_the_party_holding_labels(bare_ctx):
    g, _ = _grads()
    for hook in (MaxNorm(), MaxNormMult(), IsotropicNoise(r=1.0)):
        hook.setup(bare_ctx())
        assert torch.equal(hook.backward("c", g, activation=g, labels=None), g)


def test_isotropic_noise_has_std_r_max_norm_over_sqrt_d(bare_ctx):
    g, y = _grads(n=200)
    hook = IsotropicNoise(r=0.5)
    hook.setup(bare_ctx())
    noise = (hook.backward("c", g, activation=g, labels=y) - g).reshape(len(g), -1)
    d = noise.shape[1]
    std = 0.5 * float(g.reshape(len(g), -1).norm(dim=1).max()) / d**0.5
    scaled = (noise / std).flatten().double().numpy()
    assert stats.kstest(scaled, "norm").pvalue > 0.01
    n = scaled.size
    assert stats.chi2(n).ppf(0.001) < float((scaled**2).sum()) < stats.chi2(n).ppf(0.999)


@pytest.mark.parametrize("match", ["max-norm", "marvell"])
def test_isotropic_match_spends_the_same_power_as_the_matched_defense(bare_ctx, match):
    g, y = _grads(n=100)
    hook = IsotropicNoise(match=match, s=2.0 if match == "marvell" else None)
    hook.setup(bare_ctx())
    out = _apply(hook, g, y, repeats=300).reshape(300, len(g), -1)
    flat = g.reshape(len(g), -1)
    if match == "max-norm":
        expected = max_norm_power(flat)
    else:
        expected = 2.0 * float(class_stats(flat, y).diff.pow(2).sum())
    measured = float((out - flat).pow(2).sum(2).mean())
    assert measured == pytest.approx(expected, rel=0.02)
    assert hook.metrics()["isotropic_power_budget"] == pytest.approx(expected)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(r=-1.0), "r must be a finite number > 0"),
        (dict(r=1.0, match="max-norm"), "r or match, not both"),
        (dict(s=1.0), "use it with match=marvell"),
        (dict(match="marvell", s=0.0), "s must be"),
    ],
)
def test_isotropic_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        IsotropicNoise(**kwargs)


def test_resume_state_replays_the_same_noise(bare_ctx):
    g, y = _grads()
    a = MaxNorm()
    a.setup(bare_ctx())
    a.backward("c", g, activation=g, labels=y)
    state = a.state_dict()
    first = a.backward("c", g, activation=g, labels=y)
    b = MaxNorm()
    b.setup(bare_ctx())
    b.load_state_dict(state)
    assert torch.equal(b.backward("c", g, activation=g, labels=y), first)
    assert b.metrics() == a.metrics()
