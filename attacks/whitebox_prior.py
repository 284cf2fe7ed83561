"""White-box inversion with a data prior: the input most typical of the data among those that
reproduce what was sent.

Plain white-box inversion (:mod:`nopeek.attacks.whitebox`) finds *an* input whose activations
match the message. Where the client segment loses information (a ReLU layer where a row switches
on fewer units than it has features: 19 of 114 breast-cancer test rows at the MLP's ``fc1``),
many inputs match exactly and the one it finds depends on where it started. This attacker also
holds samples of its own (the aux split, unlabelled) and picks, among the matching inputs, the
one closest to the data in the Mahalanobis sense of its samples:

- it estimates the data's mean ``mu`` (D,) and covariance ``S`` (D, D) from the aux samples
  (Ledoit-Wolf shrinkage, :class:`sklearn.covariance.LedoitWolf`, so that fewer samples than
  features still give an invertible estimate) and writes ``x = mu + L u`` with ``S = L L^T``;
- it minimises ``mean((f(mu + L u) - z)^2) + prior * mean(u^2)`` over the whitened ``u`` with
  L-BFGS in float64, starting from ``u = 0`` (the data mean).

Started at 0 and moved only along gradients, ``u`` stays in the span the activations constrain:
for a linear layer with ReLU this is exactly the minimum-Mahalanobis-norm input reproducing the
active units, the Gaussian prior's conditional mean (``prior = 0``). ``prior > 0`` is the MAP
estimate under noise at the cut (``prior`` ~ the noise variance per cut unit, relative to the
activations' scale): the strength search tries both.

Knowledge assumed: the victims' messages, a copy of the trained client segment, and unlabelled
samples from the data's distribution (the aux split). Measured on breast cancer as a CSV file
(undefended, cut ``fc1``): leak 0.997 (``r2`` in the file's units), against 0.954 for the plain
white-box attack from the same weights.
"""

from __future__ import annotations

import math

import torch
from sklearn.covariance import LedoitWolf
from torch import Tensor, nn

from nopeek.attacks.base import RECONSTRUCTION, Attack, AttackInputs, Reconstruction, ThreatModel
from nopeek.attacks.registry import register
from nopeek.attacks.whitebox import is_image, positive_option, steps_of

CHUNK = 20  # L-BFGS iterations between two checks of the images' range


def whitening(aux: Tensor) -> tuple[Tensor, Tensor]:
    """The mean (D,) and a Cholesky factor ``L`` (D, D) of the shrunk covariance of ``aux``
    (A, *input_shape), both float64: ``mu + u @ L.T`` maps whitened ``u`` (N, D) to inputs.

    >>> mu, L = whitening(torch.randn(50, 3) * torch.tensor([1.0, 2.0, 3.0]))
    >>> tuple(mu.shape), tuple(L.shape), bool((torch.diag(L) > 0).all())
    ((3,), (3, 3), True)
    """
    flat = aux.flatten(1).double()
    cov = LedoitWolf().fit(flat.numpy()).covariance_
    cov = torch.from_numpy(cov) + 1e-9 * torch.eye(flat.shape[1], dtype=torch.float64)
    return flat.mean(0), torch.linalg.cholesky(cov)


def invert_whitened(
    model: nn.Module,
    z: Tensor,
    mu: Tensor,
    factor: Tensor,
    *,
    steps: int,
    prior: float,
    input_shape: tuple[int, ...],
) -> Tensor:
    """Inputs (N, *input_shape) whose ``model`` activations match ``z`` (N, *cut_shape), found
    by L-BFGS over whitened coordinates from the mean (see the module docstring). ``model``
    and every tensor are float64; the model's parameters are not updated."""
    n = len(z)
    u = torch.zeros(n, factor.shape[0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [u],
        max_iter=CHUNK,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
        history_size=50,
    )

    def inputs() -> Tensor:
        return (mu + u @ factor.T).reshape(n, *input_shape)

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        fit = ((model(inputs()) - z) ** 2).flatten(1).mean(1).sum()
        loss = fit + prior * (u**2).mean(1).sum()
        loss.backward()
        return loss

    for _ in range(math.ceil(steps / CHUNK)):
        opt.step(closure)
    return inputs().detach()


@register
class WhiteBoxPrior(Attack):
    """White-box inversion that picks the matching input most typical of the attacker's own
    unlabelled samples (Mahalanobis prior, whitened L-BFGS from the data mean).

    Options: ``prior`` (weight of the prior, default 0: the exact minimum-norm match; > 0 for
    noisy messages). ``steps`` are L-BFGS iterations (default 500). Images are clamped to
    their valid range at the end.
    """

    name = "white-box-prior"
    kind = RECONSTRUCTION
    threat_model = ThreatModel(activations=True, client_weights=True, aux_data=True)
    option_keys = ("prior",)
    search_space = {"steps": (500, 1500), "prior": (0.0, 1e-3, 1e-1)}
    default_samples = 128
    default_steps = 500

    def run(self, inputs: AttackInputs) -> Reconstruction:
        seen = inputs.need("activations")
        model = inputs.need("client_segment").eval().double()
        for p in model.parameters():
            p.requires_grad_(False)
        aux = inputs.need("aux")
        prior = positive_option(inputs, "prior", 0.0)
        steps = steps_of(inputs, self.default_steps)
        mu, factor = whitening(aux.x)
        x_hat = invert_whitened(
            model,
            seen.tensor.double(),
            mu,
            factor,
            steps=steps,
            prior=prior,
            input_shape=tuple(inputs.input_shape),
        )
        if is_image(tuple(inputs.input_shape)):
            x_hat = x_hat.clamp(0.0, inputs.data_range)
        extra = {"prior": prior, "aux_samples": len(aux)}
        return Reconstruction(ids=seen.ids.clone(), x_hat=x_hat.float(), extra=extra)
