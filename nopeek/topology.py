"""Topologies: which party owns which segment, and which cut feeds which segment.

A topology is a small directed acyclic graph of :class:`Node` s. A node belongs to one party,
runs one segment (an ``nn.Module``) and reads either raw data that its party holds
(``"data:x"``) or the outputs of other nodes. An edge between nodes of *different* parties is a
cut: everything on it goes through a channel. Objectives (losses) sit on nodes of the party that
holds their labels. The same trainer runs every topology.

- **vanilla** (one cut): client -> server, labels at the server;
- **multi-hop** (several cuts): client -> relay1 -> ... -> server, each cut logged;
- **u-shaped** (two cuts): client head -> server body -> client tail; labels never leave the client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from nopeek.errors import ConfigError, CutError
from nopeek.models import split
from nopeek.registry import Registry

DATA_PREFIX = "data:"


@dataclass(frozen=True)
class Node:
    """One segment run by one party. ``cut`` names the cut at this node's output, if any."""

    name: str
    party: str
    module: nn.Module
    inputs: tuple[str, ...]
    cut: str | None = None


@dataclass(frozen=True)
class Objective:
    """A cross-entropy loss on ``node``'s output against the labels ``labels`` of ``party``."""

    node: str
    labels: str
    party: str
    weight: float = 1.0
    name: str = "task"


@dataclass
class Topology:
    """Nodes in execution order, the objectives, and which party holds which data key."""

    name: str
    nodes: list[Node]
    objectives: list[Objective]
    owners: dict[str, str]  # data key ("x", "y") -> party
    data_party: str = "client"  # the party that holds the raw inputs (NoPeek acts here)
    _index: dict[str, Node] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {n.name: n for n in self.nodes}
        self.validate()

    def node(self, name: str) -> Node:
        return self._index[name]

    @property
    def parties(self) -> list[str]:
        """Parties in order of first appearance."""
        return list(dict.fromkeys(n.party for n in self.nodes))

    def crosses(self, src: str, dst: str) -> bool:
        """Whether the edge ``src -> dst`` crosses a party boundary (i.e. is a cut)."""
        return self._index[src].party != self._index[dst].party

    def cuts(self) -> list[str]:
        """Names of the cuts (edges between parties), in execution order."""
        out = []
        for node in self.nodes:
            for src in node.inputs:
                if not src.startswith(DATA_PREFIX) and self.crosses(src, node.name):
                    out.append(self._index[src].cut or src)
        return list(dict.fromkeys(out))

    def modules_of(self, party: str) -> list[nn.Module]:
        """The segments a party owns (its trainable parameters)."""
        return [n.module for n in self.nodes if n.party == party]

    def validate(self) -> None:
        """Nodes come after their inputs; every party reads only data it holds."""
        seen: set[str] = set()
        for node in self.nodes:
            for src in node.inputs:
                if src.startswith(DATA_PREFIX):
                    key = src[len(DATA_PREFIX) :]
                    if self.owners.get(key) != node.party:
                        raise ConfigError(
                            f"node {node.name!r} of party {node.party!r} reads data {key!r} "
                            f"held by {self.owners.get(key)!r}; a party may only read its own data"
                        )
                elif src not in seen:
                    raise ConfigError(f"node {node.name!r} reads {src!r} before it is computed")
            seen.add(node.name)
        for obj in self.objectives:
            if self.owners.get(obj.labels) != obj.party or self._index[obj.node].party != obj.party:
                raise ConfigError(f"objective {obj.name!r} must sit with the party holding labels")


TOPOLOGIES: Registry = Registry("topology")


@TOPOLOGIES.decorator("vanilla")
def vanilla(model: nn.Sequential, cuts: Sequence[str]) -> Topology:
    """client -> [relay1 -> ...] -> server, labels at the server. One cut per hop.

    >>> from nopeek.models import build_model
    >>> t = vanilla(build_model("digits-cnn", input_shape=(1, 8, 8), n_classes=10), ["conv2"])
    >>> t.parties, t.cuts()
    (['client', 'server'], ['conv2'])
    """
    segments = split(model, cuts)
    names = ["client"] + [f"relay{i}" for i in range(1, len(segments) - 1)] + ["server"]
    nodes, prev = [], f"{DATA_PREFIX}x"
    for i, (name, seg) in enumerate(zip(names, segments)):
        nodes.append(Node(name, name, seg, (prev,), cuts[i] if i < len(cuts) else None))
        prev = name
    return Topology(
        "vanilla",
        nodes,
        [Objective("server", "y", "server")],
        owners={"x": "client", "y": "server"},
    )


@TOPOLOGIES.decorator("u-shaped")
def u_shaped(model: nn.Sequential, cuts: Sequence[str]) -> Topology:
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
