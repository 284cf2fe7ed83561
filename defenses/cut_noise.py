"""Noise at the cut: clip each sample's activation, add Gaussian or Laplace noise, then send it.

The data party clips every sample's cut activation to norm ``clip`` (L2 for Gaussian, L1 for
Laplace; any activation shape, the norm is over all of a sample's values) and adds noise before
the tensor leaves: Gaussian ``N(0, (sigma * clip)^2)`` or Laplace with scale ``b`` on every
value. The client trains through the clipping (the noise is a constant to autograd).

**What ``epsilon_cut`` protects, and what it does not.** Each epoch releases every training
example's clipped activation once through the mechanism. Any two inputs give clipped activations
at most ``2 * clip`` apart, so each release is a Gaussian mechanism with L2 sensitivity
``2 * clip`` (replace-one, i.e. local-DP adjacency: "which input produced this message"), which
is noise multiplier ``sigma / 2``; ``epochs`` releases compose. ``epsilon_cut`` is Opacus' RDP
accountant for exactly that (sample rate 1, one step per epoch) at the run's ``delta``. It bounds
what the *noisy activation messages* reveal about an example's input **given the client's
weights**. It does not cover: what the client's weights themselves carry about the training set
(they are trained on the same data; use ``dp-sgd`` for them), the example's label (it is at the
server or protected by the label-gradient defenses), nor the gradient sent back at the cut. At
inference the activation is always clipped (the server was trained on clipped activations) and
noised only with ``inference=true``; ``epsilon_cut_inference`` is then the cost of one query.
Laplace noise is accounted as pure DP: ``2 * clip / b`` per release, composed by addition.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, ClassVar

import torch
from torch import Tensor

from nopeek.defenses.base import Defense, check_positive, rows
from nopeek.errors import ConfigError
from nopeek.hooks import TrainContext

log = logging.getLogger(__name__)

GAUSSIAN, LAPLACE = "gaussian", "laplace"


def clip_per_sample(z: Tensor, *, clip: float, norm: int = 2) -> Tensor:
    """Scale each sample of ``z`` (N, ...) so its L``norm`` norm is at most ``clip``.

    Differentiable (the client trains through it); samples already inside the ball are unchanged.

    >>> z = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    >>> clip_per_sample(z, clip=1.0)
    tensor([[0.6000, 0.8000],
            [0.3000, 0.4000]])
    """
    size = rows(z).norm(p=norm, dim=1)
    factor = (clip / size.clamp_min(1e-12)).clamp(max=1.0)
    return z * factor.reshape(-1, *([1] * (z.dim() - 1)))


def gaussian_cut_epsilon(*, sigma: float, releases: int, delta: float) -> float:
    """Epsilon of ``releases`` Gaussian releases of an activation clipped to L2 norm C.

    The noise std is ``sigma * C`` and the replace-one sensitivity is ``2 * C``, so Opacus' RDP
    accountant is run with noise multiplier ``sigma / 2``, sample rate 1 and ``releases`` steps.

    >>> round(gaussian_cut_epsilon(sigma=8.0, releases=1, delta=1e-5), 3)
    1.013
    """
    from opacus.accountants import RDPAccountant  # (opacus takes 1-2 s to import)

    accountant = RDPAccountant()
    accountant.history = [(sigma / 2, 1.0, releases)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        epsilon = float(accountant.get_epsilon(delta))
    for w in caught:
        if "smallest alpha" in str(w.message):
            # Opacus' orders start at 1.1; with so little noise the bound is loose (huge epsilon).
            log.info("cut-noise: epsilon %.4g is a loose bound (best RDP order < 1.1)", epsilon)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return epsilon


def calibrate_cut_sigma(*, target_epsilon: float, releases: int, delta: float) -> float:
    """Smallest ``sigma`` (Opacus' binary search) with :func:`gaussian_cut_epsilon` <= target."""
    try:
        from opacus.accountants.utils import get_noise_multiplier

        multiplier = get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=1.0,
            steps=releases,
            accountant="rdp",
        )
    except ValueError:
        raise ConfigError(
            f"cut-noise target_epsilon={target_epsilon} is out of reach over {releases} epochs "
            f"at delta={delta}; raise target_epsilon or train fewer epochs"
        ) from None
    return 2.0 * float(multiplier)


def laplace_cut_epsilon(*, b: float, clip: float, releases: int) -> float:
    """Pure-DP epsilon of ``releases`` Laplace releases: L1 sensitivity ``2 * clip`` over ``b``.

    >>> laplace_cut_epsilon(b=0.5, clip=1.0, releases=3)
    12.0
    """
    return releases * 2.0 * clip / b


class CutNoise(Defense):
    """Clip each sample's cut activation and add Gaussian (``sigma``) or Laplace (``b``) noise.

    Exactly one of ``sigma`` / ``target_epsilon`` for Gaussian (``target_epsilon`` calibrates
    ``sigma`` before training with Opacus' ``get_noise_multiplier``), ``b`` for Laplace.
    ``cut``: the cut to act on (default: the first cut the data party sends on).

    At inference it clips what the client sends (and noises it with ``inference=true``), so an
    attacker's queries to the client pass through it (``acts_on_queries``).
    """

    name = "cut-noise"
    acts_at = "data"
    acts_on_queries = True
    options: ClassVar[dict[str, str]] = {
        "mechanism": f"{GAUSSIAN}|{LAPLACE}",
        "sigma": "float",
        "target_epsilon": "float",
        "b": "float",
        "clip": "float",
        "inference": "bool",
        "cut": "str",
    }
    positional = "mechanism"
    purpose = 1

    def __init__(
        self,
        *,
        mechanism: str = GAUSSIAN,
        sigma: float | None = None,
        target_epsilon: float | None = None,
        b: float | None = None,
        clip: float = 1.0,
        inference: bool = False,
        cut: str | None = None,
    ) -> None:
        super().__init__()
        _validate(mechanism, sigma, target_epsilon, b, clip)
        self.mechanism, self.sigma, self.target_epsilon = mechanism, sigma, target_epsilon
        self.b, self.clip, self.inference, self.cut = b, clip, inference, cut
        self.epochs, self.delta = 0, None

    def setup(self, ctx: TrainContext) -> None:
        self.epochs, self.delta = ctx.epochs, ctx.delta
        if self.target_epsilon is not None:
            self.sigma = calibrate_cut_sigma(
                target_epsilon=self.target_epsilon, releases=ctx.epochs, delta=ctx.delta
            )
            log.info("cut-noise: sigma %.4g for epsilon %.4g", self.sigma, self.target_epsilon)
        self._seed_generators(ctx, "train", "inference")

    def forward(self, cut: str, z: Tensor, *, training: bool) -> Tensor:
        if self.cut is None:
            self.cut = cut  # the engine runs the data party first: its cut comes first
        if cut != self.cut:
            return z
        clipped = clip_per_sample(z, clip=self.clip, norm=1 if self.mechanism == LAPLACE else 2)
        if not training and not self.inference:
            return clipped
        return clipped + self.noise(clipped, stream="train" if training else "inference")

    def public(self, cut: str, z: Tensor) -> Tensor:
        """The clipping alone: the clip bound is public, the noise draws are not.

        >>> hook = CutNoise(sigma=1.0, clip=1.0)
        >>> float(hook.public("conv2", torch.full((1, 4), 10.0)).norm())
        1.0
        """
        if self.cut is not None and cut != self.cut:
            return z
        return clip_per_sample(z, clip=self.clip, norm=1 if self.mechanism == LAPLACE else 2)

    def noise(self, like: Tensor, *, stream: str) -> Tensor:
        """Noise shaped like ``like`` from the seeded generator of ``stream``."""
        gen = self.generator(stream)
        if self.mechanism == GAUSSIAN:
            std = self.sigma * self.clip
            return std * torch.randn(
                like.shape, generator=gen, device=like.device, dtype=like.dtype
            )
        # Laplace(0, b) = b * (E1 - E2) with E1, E2 ~ Exp(1) independent
        e = torch.empty((2, *like.shape), device=like.device, dtype=like.dtype)
        e.exponential_(generator=gen)
        return self.b * (e[0] - e[1])

    def params(self) -> dict[str, Any]:
        return {
            "mechanism": self.mechanism,
            "sigma": self.sigma,
            "target_epsilon": self.target_epsilon,
            "b": self.b,
            "clip": self.clip,
            "inference": self.inference,
            "cut": self.cut,
        }

    def metrics(self) -> dict[str, Any]:
        out = {f"cut_noise_{k}": v for k, v in self.params().items() if v is not None}
        if self.mechanism == GAUSSIAN:
            out["epsilon_cut"] = gaussian_cut_epsilon(
                sigma=self.sigma, releases=self.epochs, delta=self.delta
            )
            out["delta"] = self.delta
            out["cut_noise_accountant"] = "rdp (opacus), replace-one, L2 sensitivity 2*clip"
            if self.inference:
                out["epsilon_cut_inference"] = gaussian_cut_epsilon(
                    sigma=self.sigma, releases=1, delta=self.delta
                )
        else:
            out["epsilon_cut"] = laplace_cut_epsilon(b=self.b, clip=self.clip, releases=self.epochs)
            out["cut_noise_accountant"] = "pure dp (laplace), replace-one, L1 sensitivity 2*clip"
            if self.inference:
                out["epsilon_cut_inference"] = laplace_cut_epsilon(
                    b=self.b, clip=self.clip, releases=1
                )
        return out

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"cut": self.cut, "sigma": self.sigma}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.cut, self.sigma = state["cut"], state["sigma"]


def _validate(
    mechanism: str, sigma: float | None, target: float | None, b: float | None, clip: float
) -> None:
    """One-line errors for every value or combination cut-noise cannot use."""
    example = "e.g. --defense cut-noise:gaussian,sigma=0.5,clip=1"
    if mechanism not in (GAUSSIAN, LAPLACE):
        raise ConfigError(f"cut-noise mechanism must be gaussian or laplace, got {mechanism!r}")
    for key, value in (("sigma", sigma), ("target_epsilon", target), ("b", b), ("clip", clip)):
        check_positive("cut-noise", key, value, example=example)
    if mechanism == GAUSSIAN:
        if b is not None:
            raise ConfigError("cut-noise b is the Laplace scale; use sigma=... with gaussian")
        if (sigma is None) == (target is None):
            raise ConfigError(
                f"cut-noise:gaussian needs exactly one of sigma, target_epsilon; {example}"
            )
    else:
        if sigma is not None or target is not None:
            raise ConfigError(
                "cut-noise:laplace takes b (the Laplace scale), not sigma/target_epsilon; "
                "e.g. --defense cut-noise:laplace,b=0.1,clip=1"
            )
        if b is None:
            raise ConfigError(
                "cut-noise:laplace needs b; e.g. --defense cut-noise:laplace,b=0.1,clip=1"
            )
