"""Topologies: which party owns which segment, which cut feeds which segment, who holds what.

Every configuration of the split-learning papers is one :class:`Topology` (see
:mod:`nopeek.topology.graph`), built by one registered builder:

| name | parties | module of nopeek.topology |
| --- | --- | --- |
| ``vanilla`` | client -> server (labels) | ``basic`` |
| ``multi-hop`` | client -> relay1 -> ... -> server | ``basic`` |
| ``u-shaped`` | client head -> server body -> client tail (labels) | ``basic`` |
| ``vertical`` | client0..K-1 (feature slices) -> server fusion top | ``vertical`` |
| ``multi-task`` | client -> server heads, one per task | ``multitask`` |
| ``many-clients`` | client0..K-1 in turns (relay) -> server | ``clients`` |
| ``splitfed`` | client0..K-1 in parallel -> server; fed averages | ``clients`` |

Each is registered in :data:`TOPOLOGIES` as a :class:`TopologyBuilder` declared in its module,
with the :class:`Option` s it takes (``--clients``, ``--merge``, ``--tasks``, ...) and its own
rules; :func:`check_config` is how a config asks its topology whether it accepts it.
"""

from __future__ import annotations

from nopeek.registry import Registry
from nopeek.topology.basic import MULTI_HOP, U_SHAPED, VANILLA, multi_hop, u_shaped, vanilla
from nopeek.topology.builder import BuildContext, Configured, Option, TopologyBuilder
from nopeek.topology.clients import MANY_CLIENTS, SPLITFED, many_clients, splitfed
from nopeek.topology.graph import DATA_PREFIX, Edge, Node, Objective, Topology
from nopeek.topology.multitask import MULTI_TASK, TASKS, multi_task, parse_tasks
from nopeek.topology.vertical import MERGES, VERTICAL, vertical

_BUILDERS = (VANILLA, MULTI_HOP, U_SHAPED, VERTICAL, MULTI_TASK, MANY_CLIENTS, SPLITFED)
TOPOLOGIES: Registry[TopologyBuilder] = Registry("topology")
for _builder in _BUILDERS:
    TOPOLOGIES.register(_builder.name, _builder)

OPTIONS: tuple[Option, ...] = tuple({o.field: o for b in _BUILDERS for o in b.options}.values())
"""Every option some topology takes, once each (``--clients``, ``--merge``, ...)."""


def check_config(config: Configured) -> TopologyBuilder:
    """The topology ``config`` names, once it has accepted ``config``'s options.

    An unknown name lists the valid ones; then :meth:`TopologyBuilder.validate` checks each
    option's value, refuses an option set for a topology it does not apply to, and applies the
    topology's own rules, each a one-line :class:`~nopeek.errors.ConfigError`.

    >>> from nopeek.config import TrainConfig
    >>> check_config(TrainConfig(topology="vertical", clients=1))
    Traceback (most recent call last):
    ...
    nopeek.errors.ConfigError: vertical needs --clients >= 2 (one per feature slice), got 1
    """
    builder = TOPOLOGIES.get(config.topology)
    builder.validate(config, OPTIONS)
    return builder


__all__ = [
    "DATA_PREFIX",
    "MERGES",
    "OPTIONS",
    "TASKS",
    "TOPOLOGIES",
    "BuildContext",
    "Configured",
    "Edge",
    "Node",
    "Objective",
    "Option",
    "Topology",
    "TopologyBuilder",
    "check_config",
    "many_clients",
    "multi_hop",
    "multi_task",
    "parse_tasks",
    "splitfed",
    "u_shaped",
    "vanilla",
    "vertical",
]
