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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from nopeek.registry import Registry
from nopeek.topology.basic import multi_hop, u_shaped, vanilla
from nopeek.topology.clients import many_clients, splitfed
from nopeek.topology.graph import DATA_PREFIX, Edge, Node, Objective, Topology
from nopeek.topology.multitask import TASKS, multi_task, parse_tasks
from nopeek.topology.vertical import MERGES, vertical


@dataclass(frozen=True)
class BuildContext:
    """What builders beyond two parties need: the data's shape and classes, a way to build a
    fresh seeded model (``make_model(input_shape, n_classes, index)``), and the options."""

    input_shape: tuple[int, ...]
    n_classes: int
    make_model: Callable[[tuple[int, ...], int, int], nn.Sequential]
    clients: int = 2
    merge: str = "concat"
    tasks: tuple[str, ...] = ("label",)
    relay: str = "peer"
    splitfed: str = "v2"
    label_party: str = "server"
    widths: tuple[int, ...] | None = None  # vertical: each client's feature count (own files)


Builder = Callable[[nn.Sequential, Sequence[str], "BuildContext | None"], Topology]
TOPOLOGIES: Registry[Builder] = Registry("topology")


def _ctx(ctx: BuildContext | None) -> BuildContext:
    if ctx is None:

        def refuse(*_):
            raise ValueError("this topology needs a BuildContext (input shape, model factory)")

        return BuildContext((), 0, refuse)
    return ctx


TOPOLOGIES.register("vanilla", lambda m, cuts, ctx=None: vanilla(m, cuts))
TOPOLOGIES.register("multi-hop", lambda m, cuts, ctx=None: multi_hop(m, cuts))
TOPOLOGIES.register("u-shaped", lambda m, cuts, ctx=None: u_shaped(m, cuts))
TOPOLOGIES.register(
    "vertical",
    lambda m, cuts, ctx=None: vertical(
        m,
        cuts,
        input_shape=_ctx(ctx).input_shape,
        build_bottom=lambda shape, k: _ctx(ctx).make_model(shape, _ctx(ctx).n_classes, k + 1),
        clients=_ctx(ctx).clients,
        merge=_ctx(ctx).merge,
        label_party=_ctx(ctx).label_party,
        widths=_ctx(ctx).widths,
    ),
)
TOPOLOGIES.register(
    "multi-task",
    lambda m, cuts, ctx=None: multi_task(
        m,
        cuts,
        tasks=_ctx(ctx).tasks,
        n_classes=_ctx(ctx).n_classes,
        build_model=lambda c, i: _ctx(ctx).make_model(_ctx(ctx).input_shape, c, 100 + i),
    ),
)
TOPOLOGIES.register(
    "many-clients",
    lambda m, cuts, ctx=None: many_clients(
        m, cuts, clients=_ctx(ctx).clients, relay=_ctx(ctx).relay
    ),
)
TOPOLOGIES.register(
    "splitfed",
    lambda m, cuts, ctx=None: splitfed(
        m, cuts, clients=_ctx(ctx).clients, version=_ctx(ctx).splitfed
    ),
)

__all__ = [
    "DATA_PREFIX",
    "MERGES",
    "TASKS",
    "TOPOLOGIES",
    "BuildContext",
    "Edge",
    "Node",
    "Objective",
    "Topology",
    "many_clients",
    "multi_hop",
    "multi_task",
    "parse_tasks",
    "splitfed",
    "u_shaped",
    "vanilla",
    "vertical",
]
