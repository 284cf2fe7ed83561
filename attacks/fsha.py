"""Feature-space hijacking (FSHA): a malicious server steers the client into its own feature space.

Pasquini, Ateniese, Bernaschi, "Unleashing the Tiger: Inference Attacks on Split Learning"
(CCS 2021). The server replaces the gradient it sends back at the cut. On its own auxiliary data
``x_aux`` it trains a pilot encoder f~ (input -> cut space) and its inverse f~^-1 (cut -> input)
as an autoencoder, and a critic D on the cut space that tells the client's activations
``z = f(x_priv)`` from ``f~(x_aux)``. Instead of the task gradient the client receives the
gradient of an adversarial loss that makes D score ``f(x_priv)`` like ``f~(x_aux)``; the client's
own optimizer then moves f into f~'s feature space, where f~^-1 decodes it: ``x_hat = f~^-1(z)``.

Losses (the paper's WGAN-GP variant, as in its reference code), per training step on the client
batch ``z`` (N, *cut) and an aux batch ``x_aux`` (N, *input) drawn with the attack's generator:

- client, sent back as the gradient: ``L_f = mean D(z)``, i.e. ``grad = dL_f/dz``;
- pilot + decoder: ``L_ae = mean (f~^-1(f~(x_aux)) - x_aux)^2``. f~ is *not* trained
  adversarially: it only defines an invertible feature space; the client is the one pulled;
- critic: ``L_D = mean D(f~(x_aux)) - mean D(z) + gp_weight * mean (||dD/dz(z_mix)||_2 - 1)^2``
  with ``z_mix = e * z + (1 - e) * f~(x_aux)``, ``e ~ U(0, 1)`` per sample.

All three are computed with the networks as they were when the batch arrived; then f~ with f~^-1
and D each take one Adam step (the paper's simultaneous update, one critic step per client
step). Defaults: Adam lr 3e-3 for f~/f~^-1 and for D (D with betas (0.5, 0.9)), gp_weight 1.
The paper uses lr 1e-5 / 1e-4 and gp 500 over 10^4 MNIST steps with a client lr of 1e-5, far
slower than this toolkit's runs (a few hundred steps, client Adam lr 1e-3). On digits at cut
conv2, lr 1e-4 for D failed to hijack, and gp 1 beat gp 10 on seeds 0, 1, 2 (8 epochs). The
server's segment still trains on the task, on top of the hijacked features.

Where it fails (measured, 10-30 epochs): at flat ReLU cuts (digits fc1) the client's units die
under the hijacking gradient and the decoder does worse than the baseline; on breast-cancer
the client matches f~'s feature *distribution* without matching it sample by sample (near-
Gaussian data have many distribution-preserving maps), so it does not beat the baseline either;
at digits conv1 it beats the baseline only slightly. Report those runs as such.

Scoring: every ``every`` steps the server keeps a copy of its decoder. After training each copy
decodes the victims' inference activations (the fixed test sample that the trainer records), and
the result is compared with the true inputs, looked up by sample id for scoring only. Written to
``run_dir/attacks/fsha.json`` and ``fsha.png``.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor

from nopeek.attacks import _fsha_nets as nets
from nopeek.attacks import metrics
from nopeek.attacks._scoring import columns_of
from nopeek.attacks.plots import save_grid, save_reconstruction_grid
from nopeek.config import TrainConfig
from nopeek.data import Dataset, Split
from nopeek.errors import ConfigError, ThreatModelError
from nopeek.hooks import CutHook, TrainContext
from nopeek.io import atomic_write_json
from nopeek.observe import Observed
from nopeek.plugins import hook_builder
from nopeek.registry import Registry
from nopeek.rundir import RunDir
from nopeek.seeding import generator, seeded

log = logging.getLogger(__name__)

THREAT_MODEL = "malicious server: chooses the gradient it sends back at the cut; owns the aux split"
N_SNAPSHOTS = 20  # decoder copies kept over a run when ``every`` is not given
N_SHOW = 10  # victims shown in fsha.png

MALICIOUS_SERVERS: Registry[Callable[[TrainConfig], CutHook]] = Registry("malicious server")


def _gradient_penalty(critic: torch.nn.Module, z: Tensor, z_aux: Tensor, eps: Tensor) -> Tensor:
    """WGAN-GP ``mean (||dD/dm||_2 - 1)^2`` at ``m = eps*z + (1-eps)*z_aux``; eps (N, 1, ...)."""
    mix = (eps * z + (1 - eps) * z_aux).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


class FSHAServer(CutHook):
    """A server that hijacks the client's segment at ``cut`` (FSHA) and scores its decoder.

    ``aux``: the attacker's own data, x (A, *input_shape); ``unit_range``: inputs are images in
    [0, 1] (the decoder ends in a sigmoid). ``every``: keep a decoder copy every so many steps
    (default: 20 copies per run). After training :attr:`result` holds the report.
    """

    name = "fsha"
    acts_at = "server"
    one_sender = True  # hijacks the one client's cut it sees

    def __init__(
        self,
        *,
        aux: Split,
        cut: str,
        unit_range: bool,
        seed: int,
        lr_autoencoder: float = 3e-3,
        lr_discriminator: float = 3e-3,
        gp_weight: float = 1.0,
        every: int | None = None,
    ) -> None:
        if not (lr_autoencoder > 0 and lr_discriminator > 0 and gp_weight >= 0):
            raise ConfigError(
                f"FSHA needs learning rates > 0 and gp_weight >= 0, got {lr_autoencoder}, "
                f"{lr_discriminator} and {gp_weight}; pass e.g. the defaults 3e-3, 3e-3, 1"
            )
        if every is not None and every < 1:
            raise ConfigError(f"FSHA's every must be >= 1 step, got {every}; pass e.g. 10")
        if len(aux) < 2:
            raise ThreatModelError(
                "FSHA needs at least 2 auxiliary samples; use a data set with a larger aux split"
            )
        self.aux, self.cut, self.unit_range, self.seed = aux, cut, unit_range, seed
        self.lr_autoencoder, self.lr_discriminator = lr_autoencoder, lr_discriminator
        self.gp_weight, self.every_given = gp_weight, every
        self.result: dict[str, Any] | None = None
        self.aux_x = aux.x
        self._reset(device=torch.device("cpu"), every=every or 1)

    def _reset(self, *, device: torch.device, every: int) -> None:
        self.device, self.every, self.step = device, every, 0
        self.spec: dict[str, Any] | None = None  # cut shape and output sign, once seen
        self.nets: dict[str, torch.nn.Module] = {}
        self.opts: dict[str, torch.optim.Optimizer] = {}
        self.snapshots: list[dict[str, Any]] = []  # {"step", "decoder": state, losses}
        self.gen = generator(self.seed, "attack.fsha.draws")

    # --- training -------------------------------------------------------------------------
    def setup(self, ctx: TrainContext) -> None:
        total = ctx.epochs * math.ceil(ctx.n_train / ctx.batch_size)
        every = self.every_given or max(1, total // N_SNAPSHOTS)
        self._reset(device=torch.device(ctx.device), every=every)
        self.aux_x = self.aux.x.to(self.device)
        self.result = None

    def _build(self, cut_shape: tuple[int, ...], nonneg: bool) -> None:
        """Create f~, f~^-1 and D (seeded, without touching global RNG) and their optimizers."""
        self.spec = {"cut_shape": list(cut_shape), "nonneg": nonneg}
        input_shape = tuple(self.aux.x.shape[1:])
        with seeded(self.seed, "attack.fsha.nets"):
            self.nets = {
                "pilot": nets.pilot_net(input_shape, cut_shape, nonneg=nonneg),
                "decoder": nets.decoder_net(cut_shape, input_shape, unit_range=self.unit_range),
                "critic": nets.critic_net(cut_shape),
            }
        for net in self.nets.values():
            net.to(self.device)
        ae = [*self.nets["pilot"].parameters(), *self.nets["decoder"].parameters()]
        critic = self.nets["critic"].parameters()
        self.opts = {
            "autoencoder": torch.optim.Adam(ae, lr=self.lr_autoencoder),
            "critic": torch.optim.Adam(critic, lr=self.lr_discriminator, betas=(0.5, 0.9)),
        }

    def backward(
        self, cut: str, grad: Tensor, *, activation: Tensor, labels: Tensor | None
    ) -> Tensor:
        """At the attacked cut, send FSHA's hijacking gradient instead of the task gradient."""
        if cut != self.cut:
            return grad
        if self.spec is None:
            # What the server learns from the first message: the cut shape, and whether the
            # client's output is non-negative (then the pilot gets a ReLU output, reachable by f).
            self._build(tuple(activation.shape[1:]), bool((activation >= 0).all()))
        hijack, losses = self._attack_step(activation.detach())
        self.step += 1
        if self.step % self.every == 0:
            self._snapshot(losses)
        return hijack.to(grad.dtype)

    def _attack_step(self, z: Tensor) -> tuple[Tensor, dict[str, float]]:
        """One FSHA step on the client batch ``z`` (N, *cut); returns (dL_f/dz, losses)."""
        pilot, decoder, critic = self.nets["pilot"], self.nets["decoder"], self.nets["critic"]
        n = len(z)
        idx = torch.randint(len(self.aux_x), (n,), generator=self.gen)
        eps = torch.rand((n,) + (1,) * (z.dim() - 1), generator=self.gen).to(self.device)
        x_aux = self.aux_x[idx.to(self.device)]
        z_client = z.clone().requires_grad_(True)
        (hijack,) = torch.autograd.grad(critic(z_client).mean(), z_client)  # dL_f/dz
        z_aux = pilot(x_aux)
        ae_loss = torch.nn.functional.mse_loss(decoder(z_aux), x_aux)
        z_aux = z_aux.detach()
        gp = _gradient_penalty(critic, z, z_aux, eps)
        d_loss = critic(z_aux).mean() - critic(z).mean() + self.gp_weight * gp
        for opt in self.opts.values():
            opt.zero_grad(set_to_none=True)
        ae_loss.backward()
        d_loss.backward()
        for opt in self.opts.values():
            opt.step()
        return hijack.detach(), {"ae_loss": ae_loss.item(), "critic_loss": d_loss.item()}

    def _snapshot(self, losses: dict[str, float]) -> None:
        state = {k: v.detach().cpu().clone() for k, v in self.nets["decoder"].state_dict().items()}
        self.snapshots.append({"step": self.step, "decoder": state, **losses})

    # --- after training -------------------------------------------------------------------
    def on_train_end(self, result: Any) -> None:
        """Score every decoder copy on the victims' activations; write or keep the report."""
        if self.spec is None:
            raise ThreatModelError(
                f"FSHA never received a batch at cut {self.cut!r}; attack one of the run's cuts"
            )
        if not self.snapshots or self.snapshots[-1]["step"] != self.step:
            self._snapshot({})
        scratch = copy.deepcopy(self.nets["decoder"]).cpu()
        observed = result.observations.get(cut=self.cut, direction="forward", phase="inference")
        x, x_hat, report = _score(
            self.snapshots, scratch, observed, result.dataset, aux_x=self.aux.x
        )
        self.result = {
            "attack": self.name,
            "threat_model": THREAT_MODEL,
            "cut": self.cut,
            **report,
            "client_test_accuracy": result.metrics.get("test_accuracy"),
            "lr_autoencoder": self.lr_autoencoder,
            "lr_discriminator": self.lr_discriminator,
            "gp_weight": self.gp_weight,
            "snapshot_every": self.every,
            "aux_samples": len(self.aux),
        }
        if result.run_dir is not None:
            folder = Path(result.run_dir) / RunDir.ATTACKS
            atomic_write_json(folder / "fsha.json", self.result)
            _save_picture(folder / "fsha.png", x, x_hat, self.result, result.dataset)
        else:
            result.metrics.update(self.metrics())
        log.info("fsha: mse %.4f (baseline %.4f)", report["mse"], report["baseline_mse"])

    def metrics(self) -> dict[str, Any]:
        """``fsha_mse`` and ``fsha_ssim`` once the attack has been scored (else nothing)."""
        if self.result is None:
            return {}
        return {"fsha_mse": self.result["mse"], "fsha_ssim": self.result["ssim"]}

    # --- exact resume ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "every": self.every,
            "generator": self.gen.get_state(),
            "spec": self.spec,
            "nets": {k: v.state_dict() for k, v in self.nets.items()},
            "opts": {k: v.state_dict() for k, v in self.opts.items()},
            "snapshots": self.snapshots,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.every = int(state["step"]), int(state["every"])
        self.gen.set_state(state["generator"])
        if state["spec"] is not None:
            spec = state["spec"]
            self._build(tuple(spec["cut_shape"]), bool(spec["nonneg"]))
            for k, net in self.nets.items():
                net.load_state_dict(state["nets"][k])
            for k, opt in self.opts.items():
                opt.load_state_dict(state["opts"][k])
        self.snapshots = list(state["snapshots"])


def _lookup(split: Split, ids: Tensor) -> Tensor:
    """Inputs of ``split`` for sample ``ids`` (M,), in that order (ground truth, scoring only)."""
    pos = {i: k for k, i in enumerate(split.ids.tolist())}
    missing = [i for i in ids.tolist() if i not in pos]
    if missing:
        raise ThreatModelError(
            f"{len(missing)} victim ids (e.g. {missing[0]}) are not in the test split; "
            "score FSHA on the run's own data set"
        )
    return split.x[torch.as_tensor([pos[i] for i in ids.tolist()], dtype=torch.long)]


@torch.no_grad()
def _score(
    snapshots: list[dict[str, Any]],
    decoder: torch.nn.Module,
    observed: Observed,
    dataset: Dataset,
    *,
    aux_x: Tensor,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Decode the victims' activations (M, *cut) with each decoder copy; score the last one
    fully (and the aux-mean baseline), the others by MSE and SSIM. Returns (x, x_hat, report)."""
    x = _lookup(dataset.test, observed.ids)
    r = dataset.data_range
    mse_curve, ssim_curve = [], []
    for snap in snapshots:
        decoder.load_state_dict(snap["decoder"])
        x_hat = decoder(observed.tensor.float())
        mse_curve.append(metrics.mse(x, x_hat))
        ssim_curve.append(metrics.ssim(x, x_hat, data_range=r))
    baseline = metrics.baseline_reconstruction(aux_x, len(x))
    report = {
        "n_samples": len(x),
        **metrics.reconstruction_report(
            x, x_hat, baseline, data_range=r, columns=columns_of(dataset)
        ),
        "steps": [int(s["step"]) for s in snapshots],
        "mse_per_step": mse_curve,
        "ssim_per_step": ssim_curve,
    }
    return x, x_hat, report


def _save_picture(path: Path, x: Tensor, x_hat: Tensor, report: dict, dataset: Dataset) -> None:
    """Originals over reconstructions: an image grid, or two heat maps for tabular rows."""
    title = (
        f"FSHA at {report['cut']}: MSE {report['mse']:.4f} (baseline {report['baseline_mse']:.4f})"
    )
    if dataset.kind == "image":
        save_reconstruction_grid(
            path, x, x_hat, data_range=dataset.data_range, title=title, max_images=N_SHOW
        )
        return
    fig = Figure(figsize=(8, 4))
    axes = fig.subplots(2, 1, sharex=True)
    lim = float(x[:N_SHOW].abs().max())
    for ax, rows, name in zip(axes, (x, x_hat), ("original", "reconstr.")):
        ax.imshow(
            rows[:N_SHOW].flatten(1).numpy(), aspect="auto", cmap="coolwarm", vmin=-lim, vmax=lim
        )
        ax.set_ylabel(name, fontsize=8)
    fig.suptitle(title, fontsize=9)
    save_grid(fig, path)


@MALICIOUS_SERVERS.decorator(FSHAServer.name)
def _fsha_from_config(config: TrainConfig) -> FSHAServer:
    """FSHA at the config's first cut, with the aux split of the config's data set and seed.

    With several cuts (multi-hop), the party receiving the client's first cut is the attacker.
    """
    config = config.resolved()
    dataset = config.load_data()
    return FSHAServer(
        aux=dataset.aux, cut=config.cuts[0], unit_range=dataset.kind == "image", seed=config.seed
    )


def build_malicious_server(name: str, config: TrainConfig) -> CutHook:
    """The malicious-server hook ``name`` (see ``MALICIOUS_SERVERS``) for a run of ``config``.

    >>> build_malicious_server("nope", TrainConfig())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nopeek.errors.ConfigError: unknown malicious server 'nope'; choose one of: active-comp..., fsha
    """
    return MALICIOUS_SERVERS.get(name)(config)


@hook_builder("malicious_server")
def hooks_from_config(config: TrainConfig) -> list[CutHook]:
    """The malicious server ``config.malicious_server`` names, if any (the ``nopeek.hooks``
    entry point ``malicious-server``)."""
    if not config.malicious_server:
        return []
    return [build_malicious_server(config.malicious_server, config)]
