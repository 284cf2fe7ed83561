"""The graph every split-learning configuration is drawn in: nodes, edges, objectives, data.

A :class:`Topology` is a small directed acyclic graph of :class:`Node` s. A node belongs to one
party, runs one segment (an ``nn.Module``) and reads either data that its party holds
(``"data:x"``, ``"data:x0"`` ...) or the outputs of other nodes. An edge between nodes of
*different* parties is a cut (:meth:`Topology.edges`): everything on it goes through a channel.
Objectives (losses) sit on nodes of the party that holds their labels.

Data keys: ``x`` and ``y`` come from the batch; a topology may *derive* further keys from them
(``x0`` = the left half of each image, ``y:parity`` = ``y % 2``). :meth:`Topology.views` hands
each party only the keys it owns, so no party's code ever holds another's data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from torch import Tensor, nn

from nopeek.errors import ConfigError, DataError

DATA_PREFIX = "data:"

# A derived data key: (source key in the batch, function of that tensor)
Derived = tuple[str, Callable[[Tensor], Tensor]]


@dataclass(frozen=True)
class Node:
    """One segment run by one party. ``cut`` names the cut at this node's output, if any.

    ``module`` is ``None`` for a node whose segment its party does not hold until it receives
    the weights (many-clients relay: only the client whose turn it is holds the segment).
    """

    name: str
    party: str
    module: nn.Module | None
    inputs: tuple[str, ...]
    cut: str | None = None


@dataclass(frozen=True)
class Edge:
    """A cut: ``src`` (of ``sender``) feeds ``dst`` (of ``receiver``) across cut ``cut``."""

    src: str
    dst: str
    cut: str
    sender: str
    receiver: str


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
    """Nodes in execution order, the objectives, and which parties hold which data key.

    ``owners`` maps a data key to the party holding it, or to a tuple of parties when each holds
    its own shard of it (many clients). ``derived`` says how derived keys are computed from the
    batch. ``strategy`` names how epochs are planned (:mod:`nopeek.runtime.plans`): ``single``
    (every node every step), ``relay`` (clients take turns) or ``splitfed`` (clients in
    parallel, averaged each round); ``options`` holds the strategy's settings.
    """

    name: str
    nodes: list[Node]
    objectives: list[Objective]
    owners: dict[str, str | tuple[str, ...]]
    derived: dict[str, Derived] = field(default_factory=dict)
    strategy: str = "single"
    options: dict[str, Any] = field(default_factory=dict)
    factories: dict[str, Callable[[], nn.Module]] = field(default_factory=dict)
    extra_parties: tuple[str, ...] = ()  # parties without nodes or data (a fed server)
    _index: dict[str, Node] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {n.name: n for n in self.nodes}
        self.validate()

    def node(self, name: str) -> Node:
        return self._index[name]

    @property
    def parties(self) -> list[str]:
        """Parties in order of first appearance (nodes first, then pure data holders)."""
        holders = [p for v in self.owners.values() for p in ((v,) if isinstance(v, str) else v)]
        return list(
            dict.fromkeys([n.party for n in self.nodes] + holders + list(self.extra_parties))
        )

    def holders(self, key: str) -> tuple[str, ...]:
        """The parties holding data key ``key``."""
        value = self.owners.get(key, ())
        return (value,) if isinstance(value, str) else tuple(value)

    @property
    def data_parties(self) -> list[str]:
        """Parties holding raw inputs (``x`` or a slice of it): NoPeek and cut noise act here."""
        keys = [k for k in self.owners if k == "x" or self.derived.get(k, ("",))[0] == "x"]
        return list(dict.fromkeys(p for k in keys for p in self.holders(k)))

    @property
    def data_party(self) -> str:
        """The first data party (the client of two-party topologies)."""
        return self.data_parties[0]

    @property
    def label_parties(self) -> list[str]:
        """Parties holding the labels of some objective."""
        return list(dict.fromkeys(o.party for o in self.objectives))

    def crosses(self, src: str, dst: str) -> bool:
        """Whether the edge ``src -> dst`` crosses a party boundary (i.e. is a cut)."""
        return self._index[src].party != self._index[dst].party

    def cut_of(self, src: str) -> str:
        """The cut name at node ``src``'s output."""
        return self._index[src].cut or src

    def edges(self) -> list[Edge]:
        """Every cut edge, in execution order of the receiving nodes."""
        out = []
        for node in self.nodes:
            for src in node.inputs:
                if not src.startswith(DATA_PREFIX) and self.crosses(src, node.name):
                    sender = self._index[src].party
                    out.append(Edge(src, node.name, self.cut_of(src), sender, node.party))
        return out

    def cuts(self) -> list[str]:
        """Names of the cuts, in execution order."""
        return list(dict.fromkeys(e.cut for e in self.edges()))

    def modules_of(self, party: str) -> list[nn.Module]:
        """The segments a party holds now (its trainable parameters)."""
        return [n.module for n in self.nodes if n.party == party and n.module is not None]

    def nodes_of(self, party: str) -> list[Node]:
        return [n for n in self.nodes if n.party == party]

    def skeleton(self) -> Topology:
        """The same graph without any segment: what a party may know of the other parties
        (who reads what, which cut, which labels), never their weights."""
        nodes = [replace(n, module=None) for n in self.nodes]
        return Topology(
            self.name,
            nodes,
            list(self.objectives),
            dict(self.owners),
            dict(self.derived),
            self.strategy,
            dict(self.options),
            {},
            self.extra_parties,
        )

    def views(
        self, batch: dict[str, Tensor], parties: list[str] | None = None
    ) -> dict[str, dict[str, Tensor]]:
        """Split a batch into what each of ``parties`` (default: every party) holds (the
        server never gets ``x``).

        ``batch``: x (N, ...), y (N,), ids (N,); or, at a party that read only its own data,
        the keys it holds (``x0``: its feature slice), taken as they are. The runtime adds the
        batch's ids to every view (sample ids are the alignment key on every message).
        """
        wanted = self.parties if parties is None else list(parties)
        out: dict[str, dict[str, Tensor]] = {p: {} for p in wanted}
        for key in self.owners:
            holders = [p for p in self.holders(key) if p in out]
            if holders:
                value = self._value(key, batch)
                for party in holders:
                    out[party][key] = value
        return out

    def _value(self, key: str, batch: dict[str, Tensor]) -> Tensor:
        """Data key ``key`` of ``batch``: as given, or derived from its source."""
        if key in batch:
            return batch[key]
        source, fn = self.derived.get(key, (key, None))
        if fn is None or source not in batch:
            raise DataError(
                f"the batch has no {key!r} (nor {source!r} to derive it from), which "
                f"{' and '.join(self.holders(key))} holds; give that party its data"
            )
        return fn(batch[source])

    def validate(self) -> None:
        """Nodes come after their inputs; every party reads only data it holds."""
        seen: set[str] = set()
        for node in self.nodes:
            for src in node.inputs:
                if src.startswith(DATA_PREFIX):
                    key = src[len(DATA_PREFIX) :]
                    if node.party not in self.holders(key):
                        raise ConfigError(
                            f"node {node.name!r} of party {node.party!r} reads data {key!r} "
                            f"held by {self.owners.get(key)!r}; a party may only read its own data"
                        )
                elif src not in seen:
                    raise ConfigError(f"node {node.name!r} reads {src!r} before it is computed")
            seen.add(node.name)
        for obj in self.objectives:
            if (
                obj.party not in self.holders(obj.labels)
                or self._index[obj.node].party != obj.party
            ):
                raise ConfigError(f"objective {obj.name!r} must sit with the party holding labels")
