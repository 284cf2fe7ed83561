"""Many clients with one server: clients taking turns (relay) and SplitFed.

- **many-clients** (Gupta & Raskar 2018): K clients with disjoint shards train with one server
  in turns. After its turn a client hands its segment's weights to the next client, directly
  (``relay="peer"``) or through the server (``relay="server"``), as a ``weights`` message on the
  channel; only the client whose turn it is holds the segment.
- **splitfed** (Thapa et al. 2022): the clients train in parallel each round, every client with
  its own copy of the client segment; at the end of the round a fed server (party ``fed``)
  averages the client segments, weighted by shard size, and sends the mean back. ``v1`` also
  keeps one server segment per client, averaged at the end of the round by the server; ``v2``
  keeps one server segment that serves the clients in turn. With ``local_epochs`` E > 1 each
  client makes E passes over its shard in a round before the averaging (McMahan et al.'s E).

Labels sit at the server in both (it sees each client's batch labels, as in vanilla).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

from torch import nn

from nopeek.errors import ConfigError
from nopeek.models import split
from nopeek.topology.builder import CLIENTS_OPTION, Option, TopologyBuilder, one_of, positive_int
from nopeek.topology.graph import DATA_PREFIX, Node, Objective, Topology

RELAYS = ("peer", "server")
SPLITFED_VERSIONS = ("v1", "v2")


def _dirichlet(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ConfigError(
            f"--non-iid must be a Dirichlet concentration > 0, got {value}; omit it for IID shards"
        )
    return value


RELAY_OPTION = Option("relay", one_of("--relay", RELAYS))
"""``--relay``: who hands a client's segment to the next (many-clients)."""
SPLITFED_OPTION = Option("splitfed", one_of("--splitfed", SPLITFED_VERSIONS))
"""``--splitfed``: one server segment per client (v1) or one for all (v2)."""


LOCAL_EPOCHS_OPTION = Option(
    "local_epochs",
    positive_int("--local-epochs", "passes over a shard per round"),
    default=1,
    only="splitfed",
)
"""``--local-epochs``: passes over its shard each client makes per SplitFed round (E)."""
NON_IID_OPTION = Option("non_iid", _dirichlet)
"""``--non-iid``: the Dirichlet concentration of the clients' label shards (none: IID)."""


def _check(clients: int, cuts: Sequence[str], what: str) -> None:
    if clients < 1:
        raise ConfigError(f"{what} needs --clients >= 1, got {clients}")
    if len(cuts) != 1:
        raise ConfigError(f"{what} takes one cut (the client segment ends there), got {cuts}")


def many_clients(
    model: nn.Module, cuts: Sequence[str], *, clients: int = 2, relay: str = "peer"
) -> Topology:
    """K clients take turns with one server, relaying the client segment's weights.

    >>> from nopeek.models import build_model
    >>> t = many_clients(build_model("mlp", input_shape=(4,), n_classes=2), ["fc1"], clients=3)
    >>> t.parties, [n.module is not None for n in t.nodes]
    (['client0', 'client1', 'client2', 'server'], [True, False, False, True])
    """
    _check(clients, cuts, "many-clients")
    RELAY_OPTION.check(relay)
    head, tail = split(model, cuts)
    names = [f"client{k}" for k in range(clients)]
    template = copy.deepcopy(head)
    nodes = [
        Node(name, name, head if k == 0 else None, (f"{DATA_PREFIX}x",), cuts[0])
        for k, name in enumerate(names)
    ]
    nodes.append(Node("server", "server", tail, tuple(names)))
    return Topology(
        "many-clients",
        nodes,
        [Objective("server", "y", "server")],
        owners={"x": tuple(names), "y": "server"},
        strategy="relay",
        options={"clients": clients, "relay": relay},
        factories={name: (lambda: copy.deepcopy(template)) for name in names},
    )


def splitfed(
    model: nn.Module,
    cuts: Sequence[str],
    *,
    clients: int = 2,
    version: str = "v2",
    local_epochs: int = 1,
) -> Topology:
    """K clients in parallel, client segments averaged each round by the fed server;
    ``local_epochs``: the passes over its shard each client makes in a round.

    >>> from nopeek.models import build_model
    >>> t = splitfed(build_model("mlp", input_shape=(4,), n_classes=2), ["fc1"], clients=2,
    ...              version="v1")
    >>> t.parties, [n.name for n in t.nodes]
    (['client0', 'client1', 'server', 'fed'], ['client0', 'client1', 'server0', 'server1'])
    """
    _check(clients, cuts, "splitfed")
    SPLITFED_OPTION.check(version)
    LOCAL_EPOCHS_OPTION.check(local_epochs)
    head, tail = split(model, cuts)
    names = [f"client{k}" for k in range(clients)]
    nodes = [
        Node(name, name, head if k == 0 else copy.deepcopy(head), (f"{DATA_PREFIX}x",), cuts[0])
        for k, name in enumerate(names)
    ]
    if version == "v2":
        nodes.append(Node("server", "server", tail, tuple(names)))
        objectives = [Objective("server", "y", "server")]
    else:
        for k, name in enumerate(names):
            seg = tail if k == 0 else copy.deepcopy(tail)
            nodes.append(Node(f"server{k}", "server", seg, (name,)))
        objectives = [
            Objective(f"server{k}", "y", "server", name=f"task{k}") for k in range(clients)
        ]
    return Topology(
        "splitfed",
        nodes,
        objectives,
        owners={"x": tuple(names), "y": "server"},
        strategy="splitfed",
        options={"clients": clients, "splitfed": version, "local_epochs": local_epochs},
        extra_parties=("fed",),
    )


MANY_CLIENTS = TopologyBuilder(
    "many-clients",
    lambda m, cuts, ctx: many_clients(m, cuts, clients=ctx.clients, relay=ctx.relay),
    options=(CLIENTS_OPTION, RELAY_OPTION, NON_IID_OPTION),
)
SPLITFED = TopologyBuilder(
    "splitfed",
    lambda m, cuts, ctx: splitfed(
        m, cuts, clients=ctx.clients, version=ctx.splitfed, local_epochs=ctx.local_epochs
    ),
    options=(CLIENTS_OPTION, SPLITFED_OPTION, LOCAL_EPOCHS_OPTION, NON_IID_OPTION),
)
