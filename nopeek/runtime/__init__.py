"""The party runtime: each party runs its own nodes and talks to the others only by message.

- :class:`Party` (:mod:`nopeek.runtime.party`): one party's nodes, data view, optimizer, hooks
  and the tensors it sent, kept until their gradients come back;
- :class:`InProcessRuntime` (:mod:`nopeek.runtime.inprocess`): every party in this process over
  an :class:`~nopeek.channel.InProcessChannel`.
"""

from nopeek.runtime.inprocess import InProcessRuntime, StepOutput, weighted_mean
from nopeek.runtime.party import Party, Penalty, flatten_state, load_flat_state

__all__ = [
    "InProcessRuntime",
    "Party",
    "Penalty",
    "StepOutput",
    "flatten_state",
    "load_flat_state",
    "weighted_mean",
]
