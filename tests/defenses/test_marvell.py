"""Marvell: the solver reaches the optimum of Li et al.'s problem; the noise keeps the budget."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from nopeek.defenses import Marvell, solve_marvell, sum_kl
from nopeek.defenses.label_gradient import class_stats
from nopeek.errors import ConfigError


def _kl_reference(mean1, mean0, cov1, cov0):
    """KL(N1||N0) + KL(N0||N1) with full covariance matrices (numpy, float64)."""

    def kl(m_a, c_a, m_b, c_b):
        inv = np.linalg.inv(c_b)
        diff = m_b - m_a
        _, logdet_a = np.linalg.slogdet(c_a)
        _, logdet_b = np.linalg.slogdet(c_b)
        return 0.5 * (np.trace(inv @ c_a) - len(m_a) + diff @ inv @ diff + logdet_b - logdet_a)

    return kl(mean1, cov1, mean0, cov0) + kl(mean0, cov0, mean1, cov1)


def test_sum_kl_matches_the_gaussian_kl_formula():
    rng = np.random.default_rng(0)
    d = 5
    mean1, mean0 = rng.normal(size=d), rng.normal(size=d)
    diff = mean1 - mean0
    e = diff / np.linalg.norm(diff)
    proj, perp = np.outer(e, e), np.eye(d) - np.outer(e, e)
    a1, a0, mu1, mu0, v1, v0 = 0.3, 0.1, 0.05, 0.2, 0.4, 0.7
    cov1 = v1 * np.eye(d) + a1 * proj + mu1 * perp
    cov0 = v0 * np.eye(d) + a0 * proj + mu0 * perp
    ours = sum_kl(a1, a0, mu1, mu0, var1=v1, var0=v0, dist2=float(diff @ diff), d=d)
    assert ours == pytest.approx(_kl_reference(mean1, mean0, cov1, cov0), rel=1e-10)


def _brute_force(*, var1, var0, dist2, d, p, power, starts=30):
    """SLSQP over the four raw variances from many random starts (an independent solver)."""
    rng = np.random.default_rng(1)
    budget = {
        "type": "ineq",
        "fun": lambda x: power - (p * (x[0] + (d - 1) * x[2]) + (1 - p) * (x[1] + (d - 1) * x[3])),
    }
    best = np.inf
    for _ in range(starts):
        k = max(d - 1, 1)
        x0 = rng.dirichlet(np.ones(4)) * power / np.array([p, 1 - p, p * k, (1 - p) * k])
        res = minimize(
            lambda x: sum_kl(*x, var1=var1, var0=var0, dist2=dist2, d=d),
            x0,
            method="SLSQP",
            bounds=[(0, None)] * 4,
            constraints=[budget],
            options={"ftol": 1e-12, "maxiter": 500},
        )
        if res.success and budget["fun"](res.x) > -1e-9:
            best = min(best, res.fun)
    return best


@pytest.mark.parametrize(
    "var1,var0,dist2,d,p,s",
    [
        (0.5, 0.1, 1.0, 64, 0.1, 1.0),  # positives spread more, rare positives
        (0.01, 0.2, 2.0, 512, 0.3, 0.25),
        (0.2, 0.2, 1.0, 16, 0.5, 4.0),
        (1e-3, 1e-3, 1e-4, 64, 0.1, 1.0),  # small gradients (scale invariance)
        (0.1, 0.05, 1.0, 1, 0.2, 1.0),  # one dimension: no orthogonal complement
    ],
)
def test_solver_is_at_least_as_good_as_a_brute_force_reference(var1, var0, dist2, d, p, s):
    kw = dict(var1=var1, var0=var0, dist2=dist2, d=d, p=p)
    sol = solve_marvell(**kw, power=s * dist2)
    assert min(sol.a1, sol.a0, sol.mu1, sol.mu0) >= 0
    assert sol.power == pytest.approx(s * dist2, rel=1e-9)  # the budget, spent in full
    ours = sum_kl(sol.a1, sol.a0, sol.mu1, sol.mu0, var1=var1, var0=var0, dist2=dist2, d=d)
    reference = _brute_force(**kw, power=s * dist2)
    assert np.isfinite(reference)
    assert ours <= reference * (1 + 1e-5) + 1e-9
    # and at least as good as isotropic noise of the same power
    iso = s * dist2 / d
    assert ours <= sum_kl(iso, iso, iso, iso, var1=var1, var0=var0, dist2=dist2, d=d) + 1e-9


def _batch(n=4000, d=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=gen) < 0.2).long()
    g = torch.randn(n, d, generator=gen) * 0.1
    g[y == 1] = g[y == 1] * 3 + 0.5  # positives: larger and shifted, as in Li et al.
    return g.reshape(n, 2, 4, 4), y


def test_marvell_noise_keeps_the_power_budget_and_the_per_class_covariances(bare_ctx):
    g, y = _batch()
    hook = Marvell(s=1.0)
    hook.setup(bare_ctx())
    out = hook.backward("c", g, activation=g, labels=y)
    flat = g.reshape(len(g), -1)
    noise = (out - g).reshape(len(g), -1).double()
    st = class_stats(flat, y)
    budget = float(st.diff.pow(2).sum())
    sol = solve_marvell(
        var1=st.var1, var0=st.var0, dist2=budget, d=flat.shape[1], p=st.p, power=budget
    )
    assert sol.power == pytest.approx(budget)
    assert float(noise.pow(2).sum(1).mean()) == pytest.approx(budget, rel=0.05)
    e = (st.diff / st.diff.norm()).double()
    for label, a, mu in ((1, sol.a1, sol.mu1), (0, sol.a0, sol.mu0)):
        rows = noise[y == label]
        along = rows @ e
        perp = rows - along[:, None] * e
        assert float(along.var()) == pytest.approx(a, rel=0.12, abs=1e-4 * budget)
        per_coord = float(perp.pow(2).sum(1).mean()) / (flat.shape[1] - 1)
        assert per_coord == pytest.approx(mu, rel=0.12, abs=1e-5 * budget)
    m = hook.metrics()
    assert m["marvell_power_budget"] == pytest.approx(budget)
    assert m["marvell_noise_power"] == pytest.approx(budget, rel=0.05)


def test_a_one_class_batch_reuses_the_last_estimate(bare_ctx):
    g, y = _batch(n=400)
    hook = Marvell(s=1.0)
    hook.setup(bare_ctx())
    negatives = g[y == 0][:64]
    zeros = torch.zeros(64, dtype=torch.long)
    assert torch.equal(hook.backward("c", negatives, activation=g, labels=zeros), negatives)
    hook.backward("c", g, activation=g, labels=y)
    assert not torch.equal(hook.backward("c", negatives, activation=g, labels=zeros), negatives)
    m = hook.metrics()
    assert m["marvell_one_class_batches"] == 2 and m["marvell_unprotected_batches"] == 1


def test_marvell_refuses_multi_class_labels(bare_ctx):
    hook = Marvell(s=1.0)
    hook.setup(bare_ctx())
    g = torch.randn(8, 4)
    with pytest.raises(ConfigError, match="needs binary labels.*--one-vs-rest"):
        hook.backward("c", g, activation=g, labels=torch.arange(8))
    with pytest.raises(ConfigError, match="10 classes"):
        Marvell(s=1.0).setup(bare_ctx(extra={"n_classes": 10}))
    with pytest.raises(ConfigError, match="s must be a finite number > 0"):
        Marvell(s=-1.0)
