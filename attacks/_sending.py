"""What an attacker gets from the deployed client: query answers as the client sends them
(through its forward defenses and compressor, :func:`as_sent`), and its segment followed by the
public part of its defenses (:func:`then_public`), for attacks that hold its weights."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from nopeek.attacks._target import Target
from nopeek.compress import Compressor, by_kind
from nopeek.config import TrainConfig
from nopeek.errors import ThreatModelError
from nopeek.runtime.channel import ACTIVATION

Sender = Callable[[TrainConfig, str, int], Callable[[Tensor], Tensor]]
"""``sender(config, cut, seed)``: what the client's forward defenses do to what it sends
(:func:`nopeek.defenses.run_sender`); attacks import no defenses."""


def query_segment(segment: nn.Module, batch: int = 512) -> Callable[[Tensor], Tensor]:
    """Black-box access: (B, *input_shape) -> (B, *cut_shape), detached, no gradients."""

    @torch.no_grad()
    def query(x: Tensor) -> Tensor:
        return torch.cat([segment(x[i : i + batch]).detach() for i in range(0, len(x), batch)])

    return query


def forward_codec(run: Target) -> Compressor | None:
    """The compressor ``run`` applies to the activations it sends (None: uncompressed): the
    recorded activations are its decode, and a white-box attacker inverts through it."""
    return by_kind(run.config.compress).get(ACTIVATION)


def as_sent(run: Target, query: Callable[[Tensor], Tensor], seed: int, sender: Sender | None):
    """A query returns what the client would *send*: its forward defenses (clipping, noise at
    inference) applied, as the deployed client would; the attacker's noise is freshly seeded.
    What the run compresses forward is compressed too, and decoded, as the receiver sees it
    (without the stream's error-feedback residual, which depends on the batches before).

    ``sender`` builds that transform from the run's config (attacks do not import defenses);
    without one, a defended run's queries are refused rather than answered undefended."""
    codec = forward_codec(run)
    if codec is not None:
        return _compressed(_as_sent_defended(run, query, seed, sender), codec)
    return _as_sent_defended(run, query, seed, sender)


def _compressed(query: Callable[[Tensor], Tensor], codec) -> Callable[[Tensor], Tensor]:
    return lambda x: codec.roundtrip(query(x))


def _as_sent_defended(run: Target, query, seed: int, sender: Sender | None):
    """The query through the client's forward defenses (see :func:`_as_sent`)."""
    if not run.config.defenses:
        return query
    if sender is None:
        raise ThreatModelError(
            f"{run.run_dir} was trained with defenses {run.config.defenses}, so query answers "
            "must pass through them; call run_attack(..., sender=nopeek.defenses.run_sender)"
        )
    send = sender(run.config, run.cut, seed)
    return lambda x: send(query(x))


class _Public(nn.Module):
    """The public part of the client's forward defenses as a layer (no parameters)."""

    def __init__(self, public: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.public = public

    def forward(self, z: Tensor) -> Tensor:
        return self.public(z)


def then_public(run: Target, segment: nn.Module, seed: int, sender: Sender | None) -> nn.Module:
    """``segment`` followed by what the client's defenses do to its output that holds no secret
    (cut noise's clipping: Kerckhoffs), so that a white-box attacker inverts what the client
    really sends; ``segment`` itself on an undefended run or without a ``sender``."""
    public = None
    if run.config.defenses and sender is not None:
        public = getattr(sender(run.config, run.cut, seed), "public", None)
    return segment if public is None else nn.Sequential(segment, _Public(public))
