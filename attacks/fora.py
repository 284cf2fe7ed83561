"""FORA: model inversion through a substitute client, without query access.

Paper: Xu, Zhang, Zhu, Ding & Wang, "A Stealthy Wolf in Sheep's Clothing: Model Inversion in
Split Learning via Substitute Client" (Feature-Oriented Reconstruction Attack, FORA), CVPR 2024.

Setting: a semi-honest server in split learning. It observes the client's smashed data (the
activations at the cut) and holds public auxiliary data from the same distribution; it cannot
query the client, and knows neither its weights nor its architecture. It trains a *substitute
client* ``S`` on its aux inputs so that ``S(x_aux)`` is distributed like the observed messages
("representation preference"): a critic ``D`` tells the observed messages from ``S``'s outputs
(adversarial regularisation, WGAN-GP) and a multi-kernel maximum mean discrepancy (MK-MMD,
Gaussian kernels at 2^-3 ... 2^1 times the mean squared distance, as in Long et al.'s DAN)
pulls the two distributions together. It then trains an inverse network ``S^-1`` on the pairs
``(S(x_aux), x_aux)`` and decodes the observed messages with it.

Open details and the choices made here: ``S`` is a generic network of the cut's output shape
(3x3 convolutions with stride-2 steps down to the cut's size for images with a spatial cut,
else an MLP), ending in a ReLU when every observed message is non-negative (the attacker sees
the messages); the paper trains ``S``, ``D`` and ``S^-1`` alongside the victim's training on its
training-time messages, here the three train after training on the recorded inference messages
(the victims'), ``S`` and ``D`` for ``steps`` minibatches, then ``S^-1`` (the inverse network's
decoder, :func:`~nopeek.attacks.inverse_network.build_decoder`) for ``steps`` more; the loss of
``S`` is ``adv * (-mean D(S(x))) + mmd * MKMMD`` (the reference code's default keeps the MMD
term only; ``adv`` 0.1 here); gradient penalty 10.

Threat model: ``activations`` + ``aux_data``: no query access, weights or architecture.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from nopeek.attacks.base import RECONSTRUCTION, Attack, AttackInputs, Reconstruction, ThreatModel
from nopeek.attacks.inverse_network import build_decoder, fit_decoder
from nopeek.attacks.registry import register
from nopeek.attacks.whitebox import count_option, is_image, positive_option, steps_of
from nopeek.seeding import generator, seeded, stream_seed

log = logging.getLogger(__name__)

KERNEL_SCALES = (0.125, 0.25, 0.5, 1.0, 2.0)
GRADIENT_PENALTY = 10.0


def mk_mmd(a: Tensor, b: Tensor, *, scales: tuple[float, ...] = KERNEL_SCALES) -> Tensor:
    """The biased MK-MMD^2 between samples ``a`` (N, ...) and ``b`` (M, ...): the sum over
    Gaussian kernels ``exp(-d^2 / (2 s m))``, ``m`` the mean squared distance over both samples
    (held fixed, no gradient), of ``mean k(a, a) + mean k(b, b) - 2 mean k(a, b)``.

    >>> x = torch.randn(16, 3)
    >>> float(mk_mmd(x, x))
    0.0
    >>> bool(mk_mmd(x, x + 3) > 0.5)
    True
    """
    z = torch.cat([a.flatten(1), b.flatten(1)]).double()
    d2 = torch.cdist(z, z).pow(2)
    mean = d2.detach().mean().clamp_min(1e-12)
    k = sum(torch.exp(-d2 / (2 * s * mean)) for s in scales)
    n = len(a)
    out = k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()
    return out.to(a.dtype)


def build_substitute(
    input_shape: tuple[int, ...], cut_shape: tuple[int, ...], *, width: int, nonneg: bool
) -> nn.Module:
    """``S``: inputs (N, *input_shape) -> messages (N, *cut_shape), a generic network.

    >>> s = build_substitute((1, 8, 8), (16, 4, 4), width=8, nonneg=True)
    >>> tuple(s(torch.zeros(2, 1, 8, 8)).shape)
    (2, 16, 4, 4)
    >>> tuple(build_substitute((30,), (64,), width=8, nonneg=False)(torch.zeros(2, 30)).shape)
    (2, 64)
    """
    if is_image(input_shape) and len(cut_shape) == 3:
        c, size = input_shape[0], input_shape[1]
        layers: list[nn.Module] = [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
        while math.ceil(size / 2) >= cut_shape[1]:
            layers += [nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU()]
            size = math.ceil(size / 2)
        layers += [nn.AdaptiveAvgPool2d(cut_shape[1:])]
        layers += [nn.Conv2d(width, cut_shape[0], 3, padding=1)]
    else:
        d_in, d_out = math.prod(input_shape), math.prod(cut_shape)
        layers = [nn.Flatten(), nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width)]
        layers += [nn.ReLU(), nn.Linear(width, d_out), nn.Unflatten(1, cut_shape)]
    if nonneg:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def build_critic(cut_shape: tuple[int, ...], *, width: int) -> nn.Module:
    """``D``: messages (N, *cut_shape) -> a score (N,) (higher: more like the observed ones)."""
    if len(cut_shape) == 3:
        c, h, w = cut_shape
        body = [nn.Conv2d(c, width, 3, padding=1), nn.LeakyReLU(0.2)]
        body += [nn.Conv2d(width, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
        d = width * math.ceil(h / 2) * math.ceil(w / 2)
        return nn.Sequential(*body, nn.Flatten(), nn.Linear(d, 1), nn.Flatten(0))
    d = math.prod(cut_shape)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(d, width), nn.LeakyReLU(0.2), nn.Linear(width, width),
        nn.LeakyReLU(0.2), nn.Linear(width, 1), nn.Flatten(0),
    )  # fmt: skip


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, gen: torch.Generator) -> Tensor:
    """WGAN-GP's ``mean (||grad D(mix)|| - 1)^2`` on random mixes of ``real`` and ``fake``."""
    t = torch.rand((len(real),) + (1,) * (real.dim() - 1), generator=gen)
    mix = (t * real + (1 - t) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def train_substitute(
    sub: nn.Module,
    critic: nn.Module,
    x_aux: Tensor,
    z_seen: Tensor,
    *,
    steps: int,
    lr: float,
    batch: int,
    adv: float,
    mmd: float,
    gen: torch.Generator,
) -> dict[str, float]:
    """Fit ``S`` to the observed messages' distribution (module docstring); the last losses."""
    opt_s = torch.optim.Adam(sub.parameters(), lr=lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.5, 0.9))
    last = {"mmd": 0.0, "critic": 0.0}
    for _ in tqdm(range(steps), desc="fora substitute", leave=False, disable=None):
        x = x_aux[torch.randint(len(x_aux), (min(batch, len(x_aux)),), generator=gen)]
        real = z_seen[torch.randint(len(z_seen), (min(batch, len(z_seen)),), generator=gen)]
        fake = sub(x)
        if adv > 0:
            d_loss = critic(fake.detach()).mean() - critic(real).mean()
            d_loss = d_loss + GRADIENT_PENALTY * gradient_penalty(
                critic, real, fake.detach()[: len(real)], gen
            )
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            last["critic"] = float(d_loss.detach())
        match = mk_mmd(fake, real)
        s_loss = mmd * match - (adv * critic(fake).mean() if adv > 0 else 0.0)
        opt_s.zero_grad(set_to_none=True)
        s_loss.backward()
        opt_s.step()
        last["mmd"] = float(match.detach())
    sub.eval()
    return last


@register
class Fora(Attack):
    """Substitute client fitted to the observed messages, then its inverse (module docstring).

    Options: ``lr`` (substitute and critic, Adam, 1e-3), ``width`` (substitute, critic and
    decoder width, 32), ``adv`` (weight of the critic's term, 0.1), ``mmd`` (weight of the
    MK-MMD term, 1), ``batch_size`` (64). ``steps`` (minibatch iterations of the substitute,
    and again of the decoder) defaults to 1000, as the inverse network's.
    """

    name = "fora"
    kind = RECONSTRUCTION
    threat_model = ThreatModel(activations=True, aux_data=True)
    option_keys = ("lr", "width", "adv", "mmd", "batch_size")
    search_space = {
        "width": (32, 64),
        "adv": (0.1, 0.0, 1.0),
        "lr": (1e-3, 3e-4),
        "steps": (1000, 2000),
    }
    default_samples = None
    default_steps = 1000

    def run(self, inputs: AttackInputs) -> Reconstruction:
        seen, aux = inputs.need("activations"), inputs.need("aux")
        lr = positive_option(inputs, "lr", 1e-3)
        width = count_option(inputs, "width", 32)
        adv, mmd = (float(inputs.options.get(k, d)) for k, d in (("adv", 0.1), ("mmd", 1.0)))
        batch = count_option(inputs, "batch_size", 64)
        steps = steps_of(inputs, self.default_steps)
        z_seen, x_aux = seen.tensor.float(), aux.x.float()
        cut_shape = tuple(z_seen.shape[1:])
        with seeded(inputs.seed, "attack.fora", "init"):
            nonneg = bool((z_seen >= 0).all())
            sub = build_substitute(inputs.input_shape, cut_shape, width=width, nonneg=nonneg)
            critic = build_critic(cut_shape, width=width)
            decoder = build_decoder(
                cut_shape, inputs.input_shape, data_range=inputs.data_range, width=width
            )
        gen = generator(inputs.seed, "attack.fora", "draws")
        last = train_substitute(
            sub, critic, x_aux, z_seen, steps=steps, lr=lr, batch=batch, adv=adv, mmd=mmd, gen=gen
        )
        with torch.no_grad():
            z_aux = sub(x_aux)
        fit = fit_decoder(
            decoder, z_aux, x_aux, steps=steps, lr=1e-3, batch_size=batch,
            seed=stream_seed(inputs.seed, "attack.fora", "decoder"),
        )  # fmt: skip
        with torch.no_grad():
            x_hat = decoder(z_seen)
            gap = float(mk_mmd(z_aux[:256], z_seen[:256]))
        log.info("fora: substitute MK-MMD %.4f, decoder loss %.5f", gap, fit)
        extra = {"lr": lr, "width": width, "adv": adv, "mmd": mmd, "batch_size": batch}
        extra |= {"substitute_mmd": gap, "decoder_train_mse": fit, "critic_loss": last["critic"]}
        return Reconstruction(ids=seen.ids.clone(), x_hat=x_hat, extra=extra)
