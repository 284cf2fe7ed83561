"""Generative regression network: a vertical client's features from the model's predictions.

Paper: Luo, Wu, Xiao & Ooi, "Feature Inference Attack on Model Predictions in Vertical
Federated Learning", ICDE 2021 (Section V, the generative regression network, GRN).

Setting: vertical split learning; the attacker is the party that receives the model's
predictions (the label / active party). After training it holds, for every victim sample, the
model's confidence scores ``v``, its own feature columns ``x_own`` and the trained model ``f``
(white-box, the victim's bottom included). It trains a generator
``G(x_own, r) -> x_victim_hat`` (``r`` Gaussian noise of the victim's shape) so that the known
model, given the attacker's own and the generated columns, gives the observed scores::

    min_G  mean_i || softmax f(x_own_i, G(x_own_i, r_i)) - v_i ||^2 + lambda * mean_i var(G(...)_i)

then reads the victims' columns off ``G``. No victim column is ever seen: the loss uses only the
predictions, so the generator is trained on the victims themselves (the paper accumulates the
predictions of the prediction phase and trains on them).

Open details and the choices made here: the generator is an MLP (``width``, ``width // 3``,
``width // 6`` units, LayerNorm + ReLU, as in VFLAIR's ``GenerativeRegressionNetwork``); images
end in a sigmoid scaled to the data range, standardized tabular columns in a linear layer (the
attacker knows they are standardized, so zero, the training mean, is its natural start); the
variance penalty ``var_weight`` (the "unknown variance" term of the paper's regulariser, 1/16 as
in VFLAIR) shrinks each generated row towards its own mean; the noise draw at read-out is one
fixed, seeded draw. The cut's defenses are not in the attacker's white-box model (it knows their
mechanism; the predictions it sees were made through them).

Threat model: ``predictions`` + ``joint_model`` + ``own_features``, on vertical runs only.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from nopeek.attacks._vertical import vertical_refusal
from nopeek.attacks.base import RECONSTRUCTION, Attack, AttackInputs, Reconstruction, ThreatModel
from nopeek.attacks.registry import register
from nopeek.attacks.whitebox import count_option, is_image, positive_option, steps_of
from nopeek.config import TrainConfig
from nopeek.seeding import generator, seeded

log = logging.getLogger(__name__)


def build_generator(
    own_dim: int, victim_shape: tuple[int, ...], *, width: int, data_range: float
) -> nn.Module:
    """``G``: (N, own_dim + prod(victim_shape)) -> (N, *victim_shape).

    >>> g = build_generator(3, (1, 8, 4), width=60, data_range=1.0)
    >>> tuple(g(torch.zeros(2, 3 + 32)).shape)
    (2, 1, 8, 4)
    """
    d_out = math.prod(victim_shape)
    sizes = [own_dim + d_out, width, max(1, width // 3), max(1, width // 6)]
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.ReLU()]
    layers += [nn.Linear(sizes[-1], d_out), nn.Unflatten(1, victim_shape)]
    if is_image(victim_shape):
        layers.append(_Scaled(data_range))
    return nn.Sequential(*layers)


class _Scaled(nn.Module):
    def __init__(self, data_range: float) -> None:
        super().__init__()
        self.data_range = data_range

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x) * self.data_range


def grn_loss(scores: Tensor, target: Tensor, x_hat: Tensor, var_weight: float) -> Tensor:
    """``mean_i ||scores_i - target_i||^2 + var_weight * mean_i var(x_hat_i)``.

    >>> grn_loss(torch.ones(2, 2), torch.zeros(2, 2), torch.zeros(2, 3), 1.0).item()
    2.0
    """
    fit = ((scores - target) ** 2).sum(1).mean()
    spread = x_hat.flatten(1).var(1).mean() if x_hat[0].numel() > 1 else x_hat.new_zeros(())
    return fit + var_weight * spread


@register
class GenerativeRegressionNetwork(Attack):
    """Train ``G(own columns, noise) -> victim columns`` so that the trained model's predictions
    on the joined columns match the observed ones (module docstring).

    Options: ``lr`` (Adam, 1e-3), ``width`` (first hidden layer, 600), ``var_weight`` (0.0625),
    ``batch_size`` (64). ``steps`` (minibatch iterations) defaults to 2000.
    """

    name = "grn"
    kind = RECONSTRUCTION
    threat_model = ThreatModel(predictions=True, joint_model=True, own_features=True)
    option_keys = ("lr", "width", "var_weight", "batch_size")
    search_space = {
        "width": (600, 300),
        "lr": (1e-3, 3e-4),
        "var_weight": (0.0625, 0.25),
        "steps": (2000, 4000),
    }
    default_samples = None  # every victim whose prediction was observed
    default_steps = 2000

    @classmethod
    def refusal(cls, config: TrainConfig) -> str | None:
        return vertical_refusal(cls.name, config)

    def run(self, inputs: AttackInputs) -> Reconstruction:
        seen = inputs.need("predictions")
        own, model = inputs.need("own_features").float(), inputs.need("joint_model")
        lr = positive_option(inputs, "lr", 1e-3)
        width = count_option(inputs, "width", 600)
        var_weight = float(inputs.options.get("var_weight", 0.0625))
        batch = count_option(inputs, "batch_size", 64)
        shape = inputs.input_shape
        with seeded(inputs.seed, "attack.grn", "init"):
            gen = build_generator(own[0].numel(), shape, width=width, data_range=inputs.data_range)
        draws = generator(inputs.seed, "attack.grn", "draws")
        opt = torch.optim.Adam(gen.parameters(), lr=lr)
        target, flat, n = seen.tensor.float(), own.flatten(1), len(own)
        loss = torch.zeros(())
        for _ in tqdm(range(steps_of(inputs, self.default_steps)), desc="grn", disable=None):
            idx = torch.randint(n, (min(batch, n),), generator=draws)
            noise = torch.randn((len(idx), math.prod(shape)), generator=draws)
            x_hat = gen(torch.cat([flat[idx], noise], 1))
            scores = torch.softmax(model(own[idx], x_hat), -1)
            loss = grn_loss(scores, target[idx], x_hat, var_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        gen.eval()
        with torch.no_grad():
            noise = torch.randn((n, math.prod(shape)), generator=draws)
            x_hat = gen(torch.cat([flat, noise], 1))
            fit = float(((torch.softmax(model(own, x_hat), -1) - target) ** 2).sum(1).mean())
        log.info("grn: last loss %.5f, prediction fit %.5f on %d victims", loss.item(), fit, n)
        extra = {"lr": lr, "width": width, "var_weight": var_weight, "batch_size": batch}
        extra |= {"prediction_fit": fit, "own_columns": int(own[0].numel())}
        return Reconstruction(ids=seen.ids.clone(), x_hat=x_hat, extra=extra)
