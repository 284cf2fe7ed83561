"""The two-party configurations and their chains: vanilla, multi-hop and U-shaped.

- **vanilla** (one cut): client -> server, labels at the server;
- **multi-hop** (several cuts): client -> relay1 -> ... -> server, each cut logged;
- **u-shaped** (two cuts): client head -> server body -> client tail; labels never leave the
  client.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from nopeek.errors import CutError
from nopeek.models import split
from nopeek.topology.builder import TopologyBuilder
from nopeek.topology.graph import DATA_PREFIX, Node, Objective, Topology


def vanilla(model: nn.Module, cuts: Sequence[str], *, name: str = "vanilla") -> Topology:
    """client -> [relay1 -> ...] -> server, labels at the server. One cut per hop.

    >>> from nopeek.models import build_model
    >>> t = vanilla(build_model("digits-cnn", input_shape=(1, 8, 8), n_classes=10), ["conv2"])
    >>> t.parties, t.cuts()
    (['client', 'server'], ['conv2'])
    """
    segments = split(model, cuts)
    names = ["client"] + [f"relay{i}" for i in range(1, len(segments) - 1)] + ["server"]
    nodes, prev = [], f"{DATA_PREFIX}x"
    for i, (party, seg) in enumerate(zip(names, segments)):
        nodes.append(Node(party, party, seg, (prev,), cuts[i] if i < len(cuts) else None))
        prev = party
    return Topology(
        name,
        nodes,
        [Objective("server", "y", "server")],
        owners={"x": "client", "y": "server"},
    )


def multi_hop(model: nn.Module, cuts: Sequence[str]) -> Topology:
    """client -> relay1 -> ... -> server: vanilla with two or more cuts, one party per hop.

    >>> from nopeek.models import build_model
    >>> m = build_model("digits-cnn", input_shape=(1, 8, 8), n_classes=10)
    >>> multi_hop(m, ["conv1", "fc1"]).parties
    ['client', 'relay1', 'server']
    """
    if len(cuts) < 2:
        raise CutError(
            f"multi-hop needs two or more cuts (one per hop), got {len(cuts)}: "
            "pass e.g. --cut conv1,fc1"
        )
    return vanilla(model, cuts, name="multi-hop")


def u_shaped(model: nn.Module, cuts: Sequence[str]) -> Topology:
    """client head -> server body -> client tail; the client keeps inputs *and* labels.

    Needs exactly two cuts: the head ends at the first, the tail starts after the second.
    """
    if len(cuts) != 2:
        raise CutError(
            f"u-shaped needs two cuts (head end, tail start), got {len(cuts)}: "
            "pass e.g. --cut conv2,fc1"
        )
    head, body, tail = split(model, cuts)
    nodes = [
        Node("client_head", "client", head, (f"{DATA_PREFIX}x",), cuts[0]),
        Node("server", "server", body, ("client_head",), cuts[1]),
        Node("client_tail", "client", tail, ("server",)),
    ]
    return Topology(
        "u-shaped",
        nodes,
        [Objective("client_tail", "y", "client")],
        owners={"x": "client", "y": "client"},
    )


VANILLA = TopologyBuilder("vanilla", lambda m, cuts, ctx: vanilla(m, cuts))
MULTI_HOP = TopologyBuilder(
    "multi-hop",
    lambda m, cuts, ctx: multi_hop(m, cuts),
    fewer_cuts="multi-hop needs two or more cuts; pass e.g. --cut conv1,fc1",
)
U_SHAPED = TopologyBuilder(
    "u-shaped",
    lambda m, cuts, ctx: u_shaped(m, cuts),
    fewer_cuts="u-shaped needs two cuts; pass e.g. --cut conv2,fc1",
)
