"""Marvell (Li et al. 2022, "Label Leakage and Protection in Two-party Split Learning", Sec. 4).

For a binary task the label party adds class-dependent Gaussian noise to each gradient row so
that the perturbed gradient distributions of the two classes are as hard to tell apart as a
noise power budget allows. Per batch (the quantities are estimated on the batch's rows):

- ``p``: fraction of positives; ``g1``, ``g0``: class means; ``v1``, ``v0``: each class's
  per-coordinate variance averaged over the ``d`` coordinates (the paper models the class
  gradients as ``N(g_k, v_k I)``); ``e = (g1 - g0) / ||g1 - g0||``;
- the power budget ``P = s * ||g1 - g0||^2``;
- the noise for class ``k`` is ``N(0, Sigma_k)``, chosen to minimise the symmetrised KL
  divergence ``KL(N(g1, v1 I + Sigma1) || N(g0, v0 I + Sigma0)) + KL(reverse)`` (an upper bound
  on what any label attack can achieve, via total variation) subject to
  ``p tr(Sigma1) + (1 - p) tr(Sigma0) <= P``.

The paper shows an optimum has the form ``Sigma_k = a_k e e^T + mu_k (I - e e^T)``, which
reduces the problem to four non-negative numbers (``a1, a0, mu1, mu0``) under one linear budget.
:func:`solve_marvell` solves that reduced problem numerically: the budget is always used in full
(scaling both classes' variance along ``e`` lowers the objective), so it is parametrised by three
shares in [0, 1] (budget along ``e`` vs. its complement, and each part's split between the
classes), searched on a grid and polished with L-BFGS-B. A batch holding one class reuses the
previous batch's solution (counted in ``marvell_one_class_batches``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from nopeek.defenses.base import check_positive
from nopeek.defenses.label_gradient import LabelGradientDefense, class_stats


@dataclass(frozen=True)
class MarvellNoise:
    """Noise covariances ``Sigma_k = a_k e e^T + mu_k (I - e e^T)`` (k = 1 positive, 0 negative).

    ``p`` and ``d`` are the batch's positive fraction and dimension; ``objective`` the
    symmetrised KL at the solution.
    """

    a1: float
    a0: float
    mu1: float
    mu0: float
    p: float
    d: int
    objective: float

    @property
    def power(self) -> float:
        """Expected noise power ``p tr(Sigma1) + (1 - p) tr(Sigma0)``."""
        tr1 = self.a1 + (self.d - 1) * self.mu1
        tr0 = self.a0 + (self.d - 1) * self.mu0
        return self.p * tr1 + (1 - self.p) * tr0


def sum_kl(a1, a0, mu1, mu0, *, var1: float, var0: float, dist2: float, d: int):
    """``KL(P1||P0) + KL(P0||P1)``, ``P_k = N(g_k, var_k I + Sigma_k)``, ``||g1-g0||^2 = dist2``.

    Works on numbers or numpy arrays (broadcast).

    >>> float(sum_kl(0, 0, 0, 0, var1=1.0, var0=1.0, dist2=4.0, d=3))
    4.0
    """
    b1, b0 = var1 + a1, var0 + a0  # variances along e
    c1, c0 = var1 + mu1, var0 + mu0  # per-coordinate variances orthogonal to e
    along = b1 / b0 + b0 / b1 - 2 + dist2 * (1 / b1 + 1 / b0)
    return 0.5 * ((d - 1) * (c1 / c0 + c0 / c1 - 2) + along)


def _split(x, *, power: float, p: float, d: int):
    """Shares ``x = (t, w, z)`` in [0, 1] -> ``(a1, a0, mu1, mu0)`` spending exactly ``power``."""
    t, w, z = x
    along, rest = t * power, (1 - t) * power
    k = max(d - 1, 1)
    return (
        w * along / p,
        (1 - w) * along / (1 - p),
        z * rest / (p * k),
        (1 - z) * rest / ((1 - p) * k),
    )


def solve_marvell(
    *, var1: float, var0: float, dist2: float, d: int, p: float, power: float, grid: int = 201
) -> MarvellNoise:
    """Marvell's optimal per-class noise for one batch (see the module docstring).

    ``var1``/``var0``: coordinate variances of the classes' gradients; ``dist2``: squared
    distance of the class means; ``p`` in (0, 1): positive fraction; ``power``: the budget P.

    >>> sol = solve_marvell(var1=0.1, var0=0.1, dist2=1.0, d=4, p=0.5, power=1.0)
    >>> round(sol.power, 6), round(sol.mu1, 6), round(sol.mu0, 6)
    (1.0, 0.0, 0.0)
    """
    if power <= 0 or dist2 <= 0:
        return MarvellNoise(0.0, 0.0, 0.0, 0.0, p, d, 0.0)
    # Everything in units of dist2: the objective is invariant to a common scale.
    v1, v0, budget = max(var1 / dist2, 1e-12), max(var0 / dist2, 1e-12), power / dist2
    kw = dict(var1=v1, var0=v0, dist2=1.0, d=d)
    s = np.linspace(0.0, 1.0, grid)
    t = s[:, None] if d > 1 else np.ones((1, 1))
    # The objective is (part along e) + (part orthogonal to e), each up to a constant:
    a1, a0, _, _ = _split((t, s[None, :], 0.0), power=budget, p=p, d=d)
    f_along = sum_kl(a1, a0, 0.0, 0.0, **kw)  # (T, G): budget share t, class split w
    _, _, mu1, mu0 = _split((t, 0.0, s[None, :]), power=budget, p=p, d=d)
    f_rest = sum_kl(0.0, 0.0, mu1, mu0, **kw) if d > 1 else np.zeros_like(f_along)
    i = int(np.argmin(f_along.min(1) + f_rest.min(1)))
    x0 = np.array([t[i, 0], s[int(np.argmin(f_along[i]))], s[int(np.argmin(f_rest[i]))]])

    def objective(x: np.ndarray) -> float:
        return float(sum_kl(*_split(x, power=budget, p=p, d=d), **kw))

    bounds = [(1.0, 1.0) if d == 1 else (0.0, 1.0), (0.0, 1.0), (0.0, 1.0)]
    polished = minimize(objective, x0, method="L-BFGS-B", bounds=bounds)
    x = polished.x if polished.fun < objective(x0) else x0
    a1, a0, mu1, mu0 = (float(v) * dist2 for v in _split(x, power=budget, p=p, d=d))
    return MarvellNoise(a1, a0, mu1, mu0, p, d, objective(x))


def marvell_noise(sol: MarvellNoise, e: Tensor, positive: Tensor, gen: torch.Generator) -> Tensor:
    """Draw one noise row per sample: ``N(0, Sigma_1)`` for positives, ``N(0, Sigma_0)`` else.

    ``e``: (d,) unit direction; ``positive``: (N,) bool -> (N, d).
    """
    n, d = len(positive), len(e)
    kw = dict(generator=gen, device=e.device, dtype=e.dtype)
    xi, zeta = torch.randn((n, 1), **kw), torch.randn((n, d), **kw)
    perp = zeta - (zeta @ e).unsqueeze(1) * e  # isotropic in the complement of e
    a = torch.where(positive, sol.a1, sol.a0).to(e.dtype).unsqueeze(1)
    mu = torch.where(positive, sol.mu1, sol.mu0).to(e.dtype).unsqueeze(1)
    return a.sqrt() * xi * e + mu.sqrt() * perp


class Marvell(LabelGradientDefense):
    """Li et al.'s Marvell with power budget ``P = s * ||mean g1 - mean g0||^2`` (binary labels).

    It noises the gradient sent back while training; a query to the client does not pass
    through it (``acts_on_queries`` False).
    """

    name = "marvell"
    options: ClassVar[dict[str, str]] = {"s": "float"}
    purpose = 5
    needs_binary = True

    def __init__(self, *, s: float = 1.0) -> None:
        super().__init__()
        check_positive("marvell", "s", s, example="e.g. --defense marvell:s=1")
        self.s = s
        self._last: tuple[Tensor, MarvellNoise] | None = None

    def noise(self, g: Tensor, labels: Tensor) -> tuple[Tensor, float]:
        stats = class_stats(g, labels)
        if stats is None:
            self.count_one_class_batch(reused=self._last is not None)
            if self._last is None:
                return torch.zeros_like(g), 0.0
        else:
            dist2 = float(stats.diff.pow(2).sum())
            e = (stats.diff / math.sqrt(dist2)) if dist2 > 0 else torch.zeros_like(stats.diff)
            sol = solve_marvell(
                var1=stats.var1,
                var0=stats.var0,
                dist2=dist2,
                d=g.shape[1],
                p=stats.p,
                power=self.s * dist2,
            )
            self._last = (e.to(g.dtype), sol)
        e, sol = self._last
        return marvell_noise(sol, e, labels == 1, self.generator("noise")), sol.power

    def params(self) -> dict[str, Any]:
        return {"s": self.s}

    def state_dict(self) -> dict[str, Any]:
        last = None if self._last is None else (self._last[0].cpu(), asdict(self._last[1]))
        return super().state_dict() | {"last": last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        last = state["last"]
        device = self.generator("noise").device
        self._last = None if last is None else (last[0].to(device), MarvellNoise(**last[1]))
