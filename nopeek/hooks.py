"""Hooks: how defenses and malicious parties change what crosses a cut.

A :class:`CutHook` is called by the party that *sends* a message: ``forward`` by the data side
before an activation leaves (e.g. clipping and noise), ``backward`` by the receiving side before
the gradient goes back (e.g. label-gradient defenses; a malicious server substituting its own
gradient). ``setup`` sees the training context before the first step (to calibrate noise or wrap
a party's optimizer); ``metrics`` adds entries to ``metrics.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn


@dataclass
class PartyState:
    """What one party owns during training: its segments and its optimizer."""

    name: str
    modules: list[nn.Module]
    optimizer: Any  # torch.optim.Optimizer (or an Opacus DPOptimizer)


@dataclass
class TrainContext:
    """Facts a hook may need before training: sizes, schedule, parties, seed, delta."""

    n_train: int
    batch_size: int
    epochs: int
    seed: int
    delta: float
    parties: dict[str, PartyState]
    data_party: str
    label_party: str
    device: Any
    extra: dict[str, Any] = field(default_factory=dict)


class CutHook:
    """Identity hook; subclasses override what they change. All tensors are ``(N, ...)``."""

    name = "identity"

    def setup(self, ctx: TrainContext) -> None:
        """Called once before training (and again on resume, before loading state)."""

    def forward(self, cut: str, z: Tensor, *, training: bool) -> Tensor:
        """Transform the activation ``z`` (still attached to the sender's graph) before sending."""
        return z

    def backward(
        self, cut: str, grad: Tensor, *, activation: Tensor, labels: Tensor | None
    ) -> Tensor:
        """Transform the gradient before the receiving party sends it back across ``cut``.

        ``activation`` is what this party received; ``labels`` are given only if it holds them.
        """
        return grad

    def on_train_end(self, result: Any) -> None:
        """Called with the :class:`~nopeek.trainer.TrainResult` after metrics.json is written
        (e.g. a malicious server writes its own report into ``result.run_dir``)."""

    def metrics(self) -> dict[str, Any]:
        """Entries for ``metrics.json`` (e.g. the privacy budget spent)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Whatever must survive a checkpoint for ``--resume`` to give identical results."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
