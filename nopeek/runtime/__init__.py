"""The party runtime: each party runs its own nodes and talks to the others only by message.

- :mod:`nopeek.runtime.channel`: the :class:`~nopeek.runtime.channel.Channel` interface, its
  messages, the in-process channel and the wire log every crossing is recorded on;
- :mod:`nopeek.runtime.wire`, :mod:`~nopeek.runtime.distributed`,
  :mod:`~nopeek.runtime.grpc_channel`: the wire format and the two network channels
  (``torch.distributed``, gRPC with mutual TLS, a long-lived stream a peer:
  :mod:`~nopeek.runtime.grpc_streams`), with :mod:`~nopeek.runtime.handshake` (prove
  membership, agree on settings) and :mod:`~nopeek.runtime.launch` / ``grpc_launch``;
- :class:`Party` (:mod:`nopeek.runtime.party`): one party's nodes, data view, optimizer, hooks
  and the tensors it sent, kept until their gradients come back;
- :class:`InProcessRuntime` (:mod:`nopeek.runtime.inprocess`): every party in this process over
  an :class:`~nopeek.runtime.channel.InProcessChannel`;
- :mod:`nopeek.runtime.plans`: how the parties go through an epoch (one group, relay, SplitFed).

The names below are imported on first use (PEP 562), so that importing
:mod:`nopeek.runtime.channel` (which the observer and the compressors read) runs no party code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nopeek.plugins import lazy_exports

if TYPE_CHECKING:
    from nopeek.runtime.inprocess import InProcessRuntime, StepOutput, weighted_mean
    from nopeek.runtime.party import Party, Penalty
    from nopeek.runtime.segments import flatten_state, load_flat_state

_LAZY = {
    "InProcessRuntime": "nopeek.runtime.inprocess",
    "StepOutput": "nopeek.runtime.inprocess",
    "weighted_mean": "nopeek.runtime.inprocess",
    "Party": "nopeek.runtime.party",
    "Penalty": "nopeek.runtime.party",
    "flatten_state": "nopeek.runtime.segments",
    "load_flat_state": "nopeek.runtime.segments",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "InProcessRuntime",
    "Party",
    "Penalty",
    "StepOutput",
    "flatten_state",
    "load_flat_state",
    "weighted_mean",
]
