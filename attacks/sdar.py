"""SDAR: a passive server's simulator of the client, regularised adversarially, and its decoder.

Paper: Zhu, Tang, Wang & Yi (NDSS 2024), "Passive Inference Attacks on Split Learning via
Adversarial Regularization".

Setting: an honest-but-curious server in vanilla split learning. It holds its own trained
segment ``g`` (cut -> logits), auxiliary data *with labels* from the same distribution, and
observes the client's messages. It trains a *simulator* ``e`` of the client on its aux data so
that its own model classifies the simulated messages (``CE(g(e(x_aux)), y_aux)``: ``e`` must
speak ``g``'s language), while a label-conditional discriminator ``D(z, y)`` that tells the
observed messages from simulated ones regularises ``e`` towards the client's real messages
(weight 0.02, the reference's); alongside, a label-conditional decoder learns
``(e(x_aux), y_aux) -> x_aux`` (MSE) and finally decodes the observed messages.

Open details and the choices made here: the paper attacks training-time messages over the
training run, here every network trains after training on the recorded inference messages
(the victims) for ``steps`` minibatches; the labels that condition the victims' decoding and
discrimination are the server's own predictions ``argmax g(z)`` (the server has no labels of
inference samples; in training it would use the batch's labels); ``e`` is the generic
substitute of :func:`~nopeek.attacks.fora.build_substitute` (the server does not know the
client's architecture); the decoder's own adversarial term (weight 1e-5 in the reference) is
left out; conditioning appends one-hot label channels (spatial cuts) or features (flat cuts).

Threat model: ``activations`` + ``aux_data`` + ``aux_labels`` + ``receiver_segment`` (the
server's own segment), on runs whose server segment maps the cut to the logits.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from nopeek.attacks.base import RECONSTRUCTION, Attack, AttackInputs, Reconstruction, ThreatModel
from nopeek.attacks.fora import build_critic, build_substitute
from nopeek.attacks.inverse_network import build_decoder
from nopeek.attacks.registry import register
from nopeek.attacks.whitebox import count_option, positive_option, steps_of
from nopeek.config import TrainConfig
from nopeek.seeding import generator, seeded

log = logging.getLogger(__name__)


def condition(z: Tensor, y: Tensor, classes: int) -> Tensor:
    """``z`` (N, C, h, w) or (N, D) with the one-hot labels ``y`` (N,) appended as channels or
    features.

    >>> tuple(condition(torch.zeros(2, 4, 3, 3), torch.tensor([0, 1]), 10).shape)
    (2, 14, 3, 3)
    >>> condition(torch.zeros(1, 2), torch.tensor([1]), 3).tolist()
    [[0.0, 0.0, 0.0, 1.0, 0.0]]
    """
    onehot = F.one_hot(y.long(), classes).to(z.dtype)
    if z.dim() == 4:
        onehot = onehot[:, :, None, None].expand(-1, -1, *z.shape[2:])
    return torch.cat([z if z.dim() == 4 else z.flatten(1), onehot], 1)


def _with_labels(shape: tuple[int, ...], classes: int) -> tuple[int, ...]:
    """The shape :func:`condition` gives messages of ``shape``."""
    return (shape[0] + classes, *shape[1:]) if len(shape) == 3 else (math.prod(shape) + classes,)


@register
class Sdar(Attack):
    """Simulator trained through the server's own segment on labelled aux data, regularised
    towards the observed messages, and a label-conditional decoder (module docstring).

    Options: ``lr`` (Adam, 1e-3), ``width`` (32), ``adv`` (the discriminator's weight in the
    simulator's loss, 0.02), ``batch_size`` (64). ``steps`` defaults to 1000.
    """

    name = "sdar"
    kind = RECONSTRUCTION
    threat_model = ThreatModel(
        activations=True, aux_data=True, aux_labels=True, receiver_segment=True
    )
    option_keys = ("lr", "width", "adv", "batch_size")
    search_space = {
        "width": (32, 64),
        "adv": (0.02, 0.1),
        "lr": (1e-3, 3e-4),
        "steps": (1000, 2000),
    }
    default_samples = None
    default_steps = 1000

    @classmethod
    def refusal(cls, config: TrainConfig) -> str | None:
        if config.topology in ("u-shaped", "vertical"):
            return (
                f"sdar trains its simulator through the server's own segment to the labels; in "
                f"a {config.topology} run that segment does not map one client's cut to the logits"
            )
        return None

    def run(self, inputs: AttackInputs) -> Reconstruction:
        seen, aux = inputs.need("activations"), inputs.need("aux")
        g = inputs.need("receiver_segment")
        lr = positive_option(inputs, "lr", 1e-3)
        width = count_option(inputs, "width", 32)
        adv = float(inputs.options.get("adv", 0.02))
        batch = count_option(inputs, "batch_size", 64)
        k = inputs.n_classes
        z_seen, x_aux, y_aux = seen.tensor.float(), aux.x.float(), aux.y.long()
        with torch.no_grad():
            y_seen = g(z_seen).argmax(1)  # the server's own guess of each victim's class
        cut = tuple(z_seen.shape[1:])
        with seeded(inputs.seed, "attack.sdar", "init"):
            nonneg = bool((z_seen >= 0).all())
            sim = build_substitute(inputs.input_shape, cut, width=width, nonneg=nonneg)
            critic = build_critic(_with_labels(cut, k), width=width)
            decoder = build_decoder(
                _with_labels(cut, k), inputs.input_shape, data_range=inputs.data_range, width=width
            )
        draws = generator(inputs.seed, "attack.sdar", "draws")
        opts = [torch.optim.Adam(m.parameters(), lr=lr) for m in (sim, critic, decoder)]
        bce = F.binary_cross_entropy_with_logits
        task = mse = torch.zeros(())
        for _ in tqdm(range(steps_of(inputs, self.default_steps)), desc="sdar", disable=None):
            i = torch.randint(len(x_aux), (min(batch, len(x_aux)),), generator=draws)
            j = torch.randint(len(z_seen), (min(batch, len(z_seen)),), generator=draws)
            x, y, real = x_aux[i], y_aux[i], condition(z_seen[j], y_seen[j], k)
            fake = sim(x)
            d_real, d_fake = critic(real), critic(condition(fake.detach(), y, k))
            d_loss = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
            opts[1].zero_grad(set_to_none=True)
            d_loss.backward()
            opts[1].step()
            fooled = critic(condition(fake, y, k))
            task = F.cross_entropy(g(fake), y)
            e_loss = task + adv * bce(fooled, torch.ones_like(fooled))
            opts[0].zero_grad(set_to_none=True)
            e_loss.backward()
            opts[0].step()
            mse = F.mse_loss(decoder(condition(fake.detach(), y, k)), x)
            opts[2].zero_grad(set_to_none=True)
            mse.backward()
            opts[2].step()
        sim.eval()
        decoder.eval()
        with torch.no_grad():
            x_hat = decoder(condition(z_seen, y_seen, k))
        log.info("sdar: simulator task loss %.4f, decoder loss %.5f", task.item(), mse.item())
        extra = {"lr": lr, "width": width, "adv": adv, "batch_size": batch}
        extra |= {"simulator_task_loss": task.item(), "decoder_train_mse": mse.item()}
        return Reconstruction(ids=seen.ids.clone(), x_hat=x_hat, extra=extra)
