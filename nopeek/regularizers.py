"""The NoPeek regularizer: penalize the distance correlation between raw inputs and cut activations.

NoPeek (Vepakomma et al., "NoPeek: Information leakage reduction to share
activations in distributed deep learning", 2020) trains the client's layers so that what they
send over the cut carries little information about the raw input, while still solving the task.

Descriptions of the objective vary: some write ``alpha * DCOR(X, Z) + (1 - alpha) * CE`` (a convex
mix, alpha in [0, 1]), others weight DCOR against CE with a free coefficient. **We use**::

    loss = CE(logits, labels) + alpha * sum_k dCor(X, Z_k)

where ``dCor`` is the biased sample distance correlation
(:func:`nopeek.distance.distance_correlation`, in [0, 1]) computed per batch between the raw
inputs ``X`` flattened per sample, ``(N, C*H*W)``, and each cut activation ``Z_k`` flattened per
sample. alpha is therefore on the scale of the cross-entropy: alpha = 0 is plain split learning,
and roughly alpha in [0, 2] is the useful range (since dCor <= 1, larger values let the
penalty dominate the task loss). The inputs are data, so they are detached: gradients of the
penalty flow only into the activations (the client's layers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from nopeek.distance import distance_correlation
from nopeek.errors import ConfigError
from nopeek.topology import DATA_PREFIX, Topology

__all__ = ["NoPeekLoss", "nopeek_penalty"]


def _check_alpha(alpha: float) -> float:
    """Return ``alpha`` as a float, or raise ``ConfigError`` if it is not a finite number >= 0."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise ConfigError(f"alpha must be a number, got {alpha!r}; pass e.g. --alpha 0.5")
    if not math.isfinite(alpha) or alpha < 0:
        raise ConfigError(
            f"alpha must be >= 0, got {alpha:g}; pass --alpha 0 to disable NoPeek "
            "or a value in about [0.1, 2] to enable it"
        )
    return float(alpha)


def _as_list(activations: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """One tensor or a sequence of tensors (one per cut) -> a non-empty list of tensors."""
    acts = [activations] if isinstance(activations, Tensor) else list(activations)
    if not acts:
        raise ConfigError("activations is empty; pass at least one cut activation (N, ...)")
    return acts


def nopeek_penalty(
    inputs: Tensor, activations: Tensor | Sequence[Tensor], *, alpha: float
) -> Tensor:
    """The NoPeek term alone: ``alpha * sum_k dCor(inputs, activations[k])``.

    This is what the split trainer adds to the client-side loss. With ``alpha == 0`` it returns a
    zero scalar without computing any dCor, so plain split learning pays nothing. A batch of
    fewer than 2 samples (e.g. the last, ragged batch of an epoch) also gives a zero penalty,
    ``z.sum() * 0`` so the graph stays intact: dCor is undefined for one sample, and training
    must not stop over it.

    Args:
        inputs: (N, ...) raw inputs of the batch, flattened per sample; detached.
        activations: (N, ...) cut activation, or a sequence of them (one per cut).
        alpha: weight of the penalty, >= 0, on the scale of the cross-entropy.

    Returns:
        (), a scalar on the activations' device, differentiable w.r.t. the activations.

    Raises:
        ConfigError: if alpha < 0 or not finite, or ``activations`` is empty.
        DataError: if the inputs or an activation hold NaN/inf.

    >>> x = torch.randn(8, 1, 4, 4)
    >>> float(nopeek_penalty(x, [x.flatten(1), -x], alpha=0.5))
    1.0
    >>> float(nopeek_penalty(x, x, alpha=0.0))
    0.0
    """
    alpha = _check_alpha(alpha)
    acts = _as_list(activations)
    if alpha == 0.0:
        return torch.zeros((), dtype=acts[0].dtype, device=acts[0].device)
    x = inputs.detach()
    n = x.shape[:1]
    if n and n[0] < 2 and all(z.shape[:1] == n for z in acts):
        return torch.stack([z.sum() * 0.0 for z in acts]).sum()
    return alpha * torch.stack([distance_correlation(x, z) for z in acts]).sum()


class NoPeekLoss(nn.Module):
    """Task loss plus the NoPeek penalty: ``task_loss(logits, labels) + alpha * sum_k dCor``.

    See the module docstring for the exact form and the scale of alpha. With ``alpha == 0`` the
    result equals the task loss exactly.

    Args:
        alpha: weight of the distance-correlation penalty, >= 0 (keyword-only).
        task_loss: loss on ``(logits, labels)``; a fresh ``nn.CrossEntropyLoss()`` if None.

    >>> loss_fn = NoPeekLoss(alpha=0.1)
    >>> x, z = torch.randn(8, 3, 4, 4), torch.randn(8, 16, requires_grad=True)
    >>> logits, labels = torch.randn(8, 10), torch.randint(0, 10, (8,))
    >>> loss = loss_fn(logits, labels, inputs=x, activations=z)
    >>> loss.backward()
    >>> z.grad.shape
    torch.Size([8, 16])
    """

    def __init__(self, *, alpha: float, task_loss: nn.Module | None = None) -> None:
        super().__init__()
        self.alpha = _check_alpha(alpha)
        self.task_loss = task_loss if task_loss is not None else nn.CrossEntropyLoss()

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        *,
        inputs: Tensor,
        activations: Tensor | Sequence[Tensor],
    ) -> Tensor:
        """Total loss.

        Args:
            logits: (N, classes) server outputs.
            labels: (N,) class indices (or whatever ``task_loss`` takes).
            inputs: (N, ...) raw inputs of the batch.
            activations: (N, ...) cut activation, or a sequence of them (one per cut).

        Returns:
            (), ``task_loss + alpha * sum_k dCor(inputs, activations[k])``.
        """
        task: Tensor = self.task_loss(logits, labels)
        return task + nopeek_penalty(inputs, activations, alpha=self.alpha)

    def extra_repr(self) -> str:
        """Show alpha in ``repr(module)``."""
        return f"alpha={self.alpha:g}"


def nopeek_penalties(
    topology: Topology, alpha: float
) -> dict[str, Callable[[dict[str, Tensor], Tensor], Tensor]]:
    """NoPeek on every node of a data party whose output crosses to another party, against that
    party's own raw inputs (a vertical client: its own feature slice): node -> ``(its party's
    data view, the node's output) -> alpha * dCor``. None with ``alpha == 0``.

    >>> from nopeek.models import build_model
    >>> from nopeek.topology import vanilla
    >>> topology = vanilla(build_model("mlp", input_shape=(4,), n_classes=2), ["fc1"])
    >>> sorted(nopeek_penalties(topology, 1.0)), nopeek_penalties(topology, 0.0)
    (['client'], {})
    """
    if alpha == 0:
        return {}
    out = {}
    for name in dict.fromkeys(e.src for e in topology.edges()):
        node = topology.node(name)
        keys = [i[len(DATA_PREFIX) :] for i in node.inputs if i.startswith(DATA_PREFIX)]
        if node.party in topology.data_parties and keys:
            out[name] = _nopeek_on(keys[0], alpha)
    return out


def _nopeek_on(key: str, alpha: float) -> Callable[[dict[str, Tensor], Tensor], Tensor]:
    return lambda view, z: nopeek_penalty(view[key], z, alpha=alpha)
