"""DP-SGD on the client segment with Opacus' ``PrivacyEngine``.

``setup`` attaches Opacus' per-sample-gradient hooks to the data party's segments in place
(``wrap_model=False``: the engine keeps calling the same module objects, and the hooks on their
layers record per-sample gradients when the client back-propagates the gradient it received at
the cut) and replaces the party's optimizer by Opacus' ``DPOptimizer`` (per-sample clipping to
``clip``, Gaussian noise ``noise_multiplier * clip`` from a seeded generator). The accountant is
Opacus' RDP accountant, stepped by the optimizer; ``epsilon_dpsgd`` is its epsilon at the run's
``delta``.

**What ``epsilon_dpsgd`` means.** It is Opacus' accounting of the client's noisy weight updates:
it bounds what the client segment's *weights* reveal about one training example (add/remove
adjacency). It does not protect the activations the client sends at the cut (use ``cut-noise``),
nor labels, nor the gradients at the cut. The trainer uses shuffled fixed-size batches, not
Poisson sampling; like Opacus with ``poisson_sampling=False``, the epsilon is the standard RDP
accounting under the Poisson assumption with sample rate ``1 / steps_per_epoch``. The per-sample
analysis assumes a sample's gradient depends on that sample only: NoPeek's dCor penalty, the
label-gradient defenses (which scale noise by batch statistics) and BatchNorm in the segments
after the cut couple the samples of a batch, so the run reports ``dpsgd_guarantee_holds: false``
(and ``dpsgd_guarantee_voided_by``) when any of them is present. Opacus' noise here is seeded for
reproducibility (``secure_mode=False``), which is not safe against floating-point attacks.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nopeek.defenses.base import Defense, check_positive
from nopeek.errors import ConfigError
from nopeek.hooks import TrainContext

if TYPE_CHECKING:  # opacus itself is imported where it is used: it takes 1-2 s to import
    from opacus import PrivacyEngine

log = logging.getLogger(__name__)


def check_opacus_compatible(modules: list[nn.Module]) -> None:
    """Raise a one-line ConfigError naming the fix when Opacus cannot train ``modules``."""
    from opacus.validators import ModuleValidator  # (opacus takes 1-2 s to import)

    errors = ModuleValidator.validate(nn.ModuleList(modules), strict=False)
    if errors:
        first = str(errors[0]).strip().split(". ")[0].rstrip(".")
        raise ConfigError(
            f"dp-sgd cannot train the client segment ({first}); replace the offending layers "
            "with opacus.validators.ModuleValidator.fix(model) (BatchNorm -> GroupNorm) and "
            "pass the fixed model, or cut before them"
        )


def coupling_layers(modules: list[nn.Module]) -> list[str]:
    """Names of BatchNorm layer types in ``modules`` (they mix the samples of a batch)."""
    found = {
        type(m).__name__
        for mod in modules
        for m in mod.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    }
    return sorted(found)


class DPSGD(Defense):
    """Opacus DP-SGD on the data party's segments: give ``epsilon`` (target) or ``sigma``.

    It changes the client's weight updates only, never a message it sends: a query to the
    trained client is answered by its segment as is (``acts_on_queries`` False). It wraps the
    party's optimizer, which a many-clients relay replaces every turn, so it cannot follow the
    client segment through a relay (``follows_relay`` False: :func:`~nopeek.hooks.bind_hooks`
    refuses it there).
    """

    name = "dp-sgd"
    acts_at = "data"
    follows_relay = False
    acts_on_queries = False
    options: ClassVar[dict[str, str]] = {
        "epsilon": "float",
        "sigma": "float",
        "clip": "float",
        "delta": "float",
    }
    purpose = 2

    def __init__(
        self,
        *,
        epsilon: float | None = None,
        sigma: float | None = None,
        clip: float = 1.0,
        delta: float | None = None,
    ) -> None:
        super().__init__()
        example = "e.g. --defense dp-sgd:epsilon=8"
        for key, value in (("epsilon", epsilon), ("sigma", sigma), ("clip", clip)):
            check_positive("dp-sgd", key, value, example=example)
        if (epsilon is None) == (sigma is None):
            raise ConfigError(f"dp-sgd needs exactly one of epsilon (target) and sigma; {example}")
        if delta is not None and not 0 < delta < 1:
            raise ConfigError(f"dp-sgd delta must be in (0, 1), got {delta}; or drop it")
        self.target_epsilon, self.noise_multiplier = epsilon, sigma
        self.clip, self.delta = clip, delta
        self.voided_by: list[str] = []
        self._engine: PrivacyEngine | None = None
        self._sample_rate, self._steps = 0.0, 0

    def note_coupling(self, reason: str) -> None:
        """Record something that makes a sample's gradient depend on other samples."""
        if reason not in self.voided_by:
            self.voided_by.append(reason)

    def setup(self, ctx: TrainContext) -> None:
        if self.delta is not None and self.delta != ctx.delta:
            raise ConfigError(
                f"dp-sgd delta={self.delta} differs from --delta {ctx.delta}; give one delta"
            )
        self.delta = ctx.delta
        party = ctx.parties[ctx.data_party]
        if party.optimizer is None:
            raise ConfigError("dp-sgd: the client segment has no trainable weights; cut later")
        check_opacus_compatible(party.modules)
        self._note_context(ctx)
        if self.voided_by:
            log.warning(
                "dp-sgd: epsilon_dpsgd assumes per-sample gradients, but %s couple the samples "
                "of a batch; the run will report dpsgd_guarantee_holds: false",
                ", ".join(self.voided_by),
            )
        gen = self._noise_generator(ctx, 0)
        self._generators = {"noise": gen}
        # The trainer's batches: ceil(n / B) steps per epoch, each sample once per epoch.
        loader = DataLoader(TensorDataset(torch.arange(ctx.n_train)), batch_size=ctx.batch_size)
        self._sample_rate = 1 / len(loader)
        self._steps = ctx.epochs * len(loader)
        self._engine, party.optimizer = self._make_private(party, loader, gen)
        self.noise_multiplier = float(party.optimizer.noise_multiplier)
        log.info("dp-sgd: noise multiplier %.4g, clip %.4g", self.noise_multiplier, self.clip)

    def _make_private(self, party, loader, gen) -> tuple[PrivacyEngine, Any]:
        """Opacus' PrivacyEngine over the party's segments (hooks in place) and optimizer."""
        with warnings.catch_warnings():  # deliberate: seeded noise for reproducible runs
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            from opacus import PrivacyEngine

            engine = PrivacyEngine(accountant="rdp", secure_mode=False)
        common = dict(
            module=nn.ModuleList(party.modules),
            optimizer=party.optimizer,
            data_loader=loader,
            max_grad_norm=self.clip,
            poisson_sampling=False,
            noise_generator=gen,
            wrap_model=False,
        )
        if self.target_epsilon is not None:
            self.noise_multiplier = self._calibrate()
        _, optimizer, _ = engine.make_private(noise_multiplier=self.noise_multiplier, **common)
        return engine, optimizer

    def _calibrate(self) -> float:
        """Opacus' ``get_noise_multiplier`` for the exact number of steps the trainer runs.

        (``make_private_with_epsilon`` derives the steps as ``int(epochs / sample_rate)``, which
        float rounding can make one short.)
        """
        from opacus.accountants.utils import get_noise_multiplier

        try:
            return float(
                get_noise_multiplier(
                    target_epsilon=self.target_epsilon,
                    target_delta=self.delta,
                    sample_rate=self._sample_rate,
                    steps=self._steps,
                    accountant="rdp",
                )
            )
        except ValueError:
            raise ConfigError(
                f"dp-sgd epsilon={self.target_epsilon} is out of reach over {self._steps} steps; "
                "raise epsilon or train fewer epochs"
            ) from None

    def _note_context(self, ctx: TrainContext) -> None:
        """What in this run couples the samples of a batch (voids the per-sample analysis)."""
        alpha = ctx.extra.get("alpha", 0.0)
        if alpha:
            self.note_coupling(f"nopeek alpha={alpha}")
        for hook in ctx.extra.get("hooks", ()):
            if getattr(hook, "couples_batch", False):
                self.note_coupling(hook.name)
        others = [m for n, p in ctx.parties.items() if n != ctx.data_party for m in p.modules]
        for layer in coupling_layers(others):
            self.note_coupling(f"{layer} after the cut")

    def params(self) -> dict[str, Any]:
        return {"epsilon": self.target_epsilon, "sigma": self.noise_multiplier, "clip": self.clip}

    def metrics(self) -> dict[str, Any]:
        holds = not self.voided_by
        out = {
            "epsilon_dpsgd": float(self._engine.get_epsilon(self.delta)),
            "delta": self.delta,
            "dpsgd_noise_multiplier": self.noise_multiplier,
            "dpsgd_max_grad_norm": self.clip,
            "dpsgd_sample_rate": self._sample_rate,
            "dpsgd_steps": self._steps,
            "dpsgd_accountant": "rdp (opacus), add/remove, poisson-sampling assumption",
            "dpsgd_secure_rng": False,
            "dpsgd_guarantee_holds": holds,
        }
        if self.target_epsilon is not None:
            out["dpsgd_target_epsilon"] = self.target_epsilon
        if not holds:
            out["dpsgd_guarantee_voided_by"] = ", ".join(self.voided_by)
        return out

    def state_dict(self) -> dict[str, Any]:
        history = [list(h) for h in self._engine.accountant.history]
        return super().state_dict() | {"accountant_history": history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._engine.accountant.history = [tuple(h) for h in state["accountant_history"]]
