"""Noise at the cut: clipping bound, noise scale, and epsilon against Opacus' accountant."""

import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from scipy import stats

from nopeek.defenses import CutNoise, clip_per_sample, gaussian_cut_epsilon
from nopeek.errors import ConfigError


@pytest.mark.parametrize("shape", [(64, 10), (64, 16, 4, 4), (64, 3, 2, 5, 7)])
@pytest.mark.parametrize("norm", [1, 2])
def test_clipped_norms_never_exceed_the_bound_for_any_shape(shape, norm):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(shape, generator=gen) * torch.logspace(-3, 2, shape[0]).reshape(
        -1, *[1] * (len(shape) - 1)
    )
    out = clip_per_sample(z, clip=1.5, norm=norm)
    norms = out.reshape(len(out), -1).norm(p=norm, dim=1)
    before = z.reshape(len(z), -1).norm(p=norm, dim=1)
    assert bool((norms <= 1.5 * (1 + 1e-6)).all())
    inside = before <= 1.5
    assert torch.allclose(out[inside], z[inside])  # samples inside the ball are unchanged
    assert torch.allclose(norms[~inside], torch.full_like(norms[~inside], 1.5))
    # direction kept: clipping only rescales
    cos = torch.nn.functional.cosine_similarity(out.reshape(len(z), -1), z.reshape(len(z), -1))
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5)


def _noise_of(hook, z, *, training=True):
    out = hook.forward("conv2", z, training=training)
    return out - clip_per_sample(z, clip=hook.clip, norm=1 if hook.mechanism == "laplace" else 2)


def test_gaussian_noise_has_std_sigma_times_clip(bare_ctx):
    hook = CutNoise(sigma=0.7, clip=2.0)
    hook.setup(bare_ctx())
    z = torch.randn(400, 8, 5, generator=torch.Generator().manual_seed(1)) * 3
    noise = _noise_of(hook, z).flatten().double()
    scaled = (noise / (0.7 * 2.0)).numpy()
    assert stats.kstest(scaled, "norm").pvalue > 0.01
    # chi-square test of the variance: sum of squares of N standard normals ~ chi2(N)
    n = scaled.size
    chi2 = float((scaled**2).sum())
    assert stats.chi2(n).ppf(0.001) < chi2 < stats.chi2(n).ppf(0.999)


def test_laplace_noise_has_scale_b_and_uses_l1_clipping(bare_ctx):
    hook = CutNoise(mechanism="laplace", b=0.3, clip=1.0)
    hook.setup(bare_ctx())
    z = torch.randn(500, 40, generator=torch.Generator().manual_seed(2))
    noise = _noise_of(hook, z).flatten().double().numpy()
    assert stats.kstest(noise, stats.laplace(scale=0.3).cdf).pvalue > 0.01
    assert not stats.kstest(noise, stats.laplace(scale=0.36).cdf).pvalue > 0.01


def test_inference_is_clipped_and_noised_only_when_asked(bare_ctx):
    z = torch.randn(32, 10) * 5
    quiet = CutNoise(sigma=1.0, clip=1.0)
    quiet.setup(bare_ctx())
    assert torch.equal(quiet.forward("c", z, training=False), clip_per_sample(z, clip=1.0))
    loud = CutNoise(sigma=1.0, clip=1.0, inference=True)
    loud.setup(bare_ctx())
    noise = loud.forward("c", z, training=False) - clip_per_sample(z, clip=1.0)
    assert 0.8 < float(noise.std()) < 1.2


def test_only_the_first_cut_is_noised_and_the_noise_is_seeded(bare_ctx):
    z = torch.randn(16, 4)
    a, b = CutNoise(sigma=1.0), CutNoise(sigma=1.0)
    a.setup(bare_ctx(seed=3))
    b.setup(bare_ctx(seed=3))
    assert torch.equal(a.forward("conv2", z, training=True), b.forward("conv2", z, training=True))
    assert torch.equal(a.forward("fc1", z, training=True), z)  # u-shaped second cut untouched
    c = CutNoise(sigma=1.0)
    c.setup(bare_ctx(seed=4))
    assert not torch.equal(
        c.forward("conv2", z, training=True), b.forward("conv2", z, training=True)
    )


def test_the_client_trains_through_the_clipping(bare_ctx):
    hook = CutNoise(sigma=0.1, clip=1.0)
    hook.setup(bare_ctx())
    z = (torch.randn(8, 3) * 4).requires_grad_()
    hook.forward("c", z, training=True).sum().backward()
    assert z.grad is not None and bool(z.grad.abs().sum() > 0)


@pytest.mark.parametrize("sigma,epochs,delta", [(0.5, 30, 1e-5), (2.0, 10, 1e-6), (8.0, 1, 1e-5)])
def test_epsilon_equals_opacus_rdp_accountant(bare_ctx, sigma, epochs, delta):
    hook = CutNoise(sigma=sigma, clip=3.0)
    hook.setup(bare_ctx(epochs=epochs, delta=delta))
    reference = RDPAccountant()
    for _ in range(epochs):  # one release per epoch; replace-one sensitivity 2C -> sigma / 2
        reference.step(noise_multiplier=sigma / 2, sample_rate=1.0)
    m = hook.metrics()
    assert m["epsilon_cut"] == pytest.approx(reference.get_epsilon(delta), rel=1e-12)
    assert m["delta"] == delta
    assert gaussian_cut_epsilon(sigma=sigma, releases=epochs, delta=delta) == m["epsilon_cut"]


def test_target_epsilon_calibrates_sigma_with_opacus(bare_ctx):
    hook = CutNoise(target_epsilon=8.0, clip=1.0)
    hook.setup(bare_ctx(epochs=20, delta=1e-5))
    expected = 2 * get_noise_multiplier(
        target_epsilon=8.0, target_delta=1e-5, sample_rate=1.0, steps=20, accountant="rdp"
    )
    assert hook.sigma == pytest.approx(expected)
    eps = hook.metrics()["epsilon_cut"]
    assert 7.9 < eps <= 8.0


def test_laplace_epsilon_is_pure_dp_composition(bare_ctx):
    hook = CutNoise(mechanism="laplace", b=0.5, clip=2.0, inference=True)
    hook.setup(bare_ctx(epochs=7))
    m = hook.metrics()
    assert m["epsilon_cut"] == pytest.approx(7 * 2 * 2.0 / 0.5)
    assert m["epsilon_cut_inference"] == pytest.approx(2 * 2.0 / 0.5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sigma=-0.5), "sigma must be a finite number > 0"),
        (dict(sigma=0.5, clip=0.0), "clip must be"),
        (dict(), "exactly one of sigma, target_epsilon"),
        (dict(sigma=1.0, target_epsilon=3.0), "exactly one of sigma, target_epsilon"),
        (dict(mechanism="laplace"), "laplace needs b"),
        (dict(mechanism="laplace", sigma=1.0, b=1.0), "takes b"),
        (dict(sigma=1.0, b=0.1), "b is the Laplace scale"),
        (dict(mechanism="uniform", sigma=1.0), "gaussian or laplace"),
    ],
)
def test_bad_values_are_one_line_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match) as err:
        CutNoise(**kwargs)
    assert "\n" not in str(err.value)


def test_an_unreachable_target_epsilon_names_the_fix(bare_ctx):
    with pytest.raises(ConfigError, match="out of reach"):
        CutNoise(target_epsilon=1e-9).setup(bare_ctx(epochs=1000))
