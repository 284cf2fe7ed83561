"""How the parties of a topology go through an epoch: one group, clients in turns, SplitFed.

A strategy turns an epoch into the steps the runtime runs (which nodes take part, on which
batch of whose shard) and does the hand-offs between them on the runtime's channel:

- :class:`SingleGroup` (vanilla, u-shaped, multi-hop, vertical, multi-task): every node on every
  batch of the training split;
- :class:`Relay` (many-clients): client k's turn is one pass over its shard; then it hands the
  client segment to client k+1 (``peer``) or through the server (``server``);
- :class:`SplitFed`: in step s every client with an s-th batch runs it through the server (v2:
  one server segment, clients in turn; v1: its own server copy); at the end of the round the fed
  server averages the client segments and v1's server averages its copies, by shard size. With
  the topology's ``local_epochs`` E, a client's part of a round is E passes over its shard.

Batch order depends only on (seed, epoch, client), so resume replays it exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from nopeek.data.party import RunSplit
from nopeek.errors import ChannelError, ConfigError
from nopeek.registry import Registry
from nopeek.runtime import InProcessRuntime, load_flat_state
from nopeek.runtime.inprocess import WeightedSum
from nopeek.runtime.segments import FlatSegment
from nopeek.seeding import generator, numpy_rng
from nopeek.topology import Topology

if TYPE_CHECKING:
    from nopeek.runtime import Party


@dataclass
class Step:
    """One step: ``nodes`` run on ``batch``; ``parties`` step their optimizers after it.

    ``index`` is the step's position in its client's pass (what the wire log records).
    """

    nodes: list[str]
    batch: dict[str, Tensor]
    parties: list[str]
    index: int


def batches(
    split: RunSplit, batch_size: int, *, seed: int, epoch: int, client: int = 0
) -> Iterator[dict[str, Tensor]]:
    """Shuffled batches of ``split``; the order depends only on (seed, epoch, client)."""
    gen = generator(seed, "batches", epoch, client)
    order = torch.randperm(len(split), generator=gen)
    for start in range(0, len(split), batch_size):
        yield split.batch(order[start : start + batch_size])


def local_pass_epoch(round_: int, passes: int, e: int) -> int:
    """The epoch whose batch order local pass ``e`` of round ``round_`` takes, for ``passes``
    local passes a round (SplitFed's and FedAvg's E): ``round_ * passes + e``, so one pass a
    round takes the round's own order, as a split-learning client's turn does.

    >>> [local_pass_epoch(2, 3, e) for e in range(3)], local_pass_epoch(2, 1, 0)
    ([6, 7, 8], 2)
    """
    return round_ * passes + e


def shard_indices(y: Tensor, clients: int, *, non_iid: float | None, seed: int) -> list[Tensor]:
    """Disjoint shards of positions ``0..N-1``: IID (a seeded random partition into near-equal
    parts) or Dirichlet(``non_iid``) over the labels, as in the federated-learning literature.

    One client gets every position in order (so ``--clients 1`` is vanilla). A shard without
    samples is an error naming the fix.

    >>> [len(s) for s in shard_indices(torch.arange(10) % 2, 3, non_iid=None, seed=0)]
    [4, 3, 3]
    """
    n = len(y)
    if clients > n:
        raise ConfigError(
            f"--clients {clients} exceeds the {n} training samples; use fewer clients"
        )
    if clients == 1:
        return [torch.arange(n)]
    rng = numpy_rng(seed, "shards")
    parts: list[np.ndarray] | list[list[int]]
    if non_iid is None:
        parts = np.array_split(rng.permutation(n), clients)
    else:
        if not non_iid > 0:
            raise ConfigError(f"--non-iid must be > 0 (a Dirichlet concentration), got {non_iid}")
        grouped: list[list[int]] = [[] for _ in range(clients)]
        labels = y.numpy()
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            share = rng.dirichlet(np.full(clients, non_iid))
            cuts = (np.cumsum(share)[:-1] * len(idx)).round().astype(int)
            for k, part in enumerate(np.split(idx, cuts)):
                grouped[k].extend(part.tolist())
        parts = grouped
    shards = [torch.as_tensor(np.sort(np.asarray(p, dtype=np.int64))) for p in parts]
    empty = [k for k, s in enumerate(shards) if len(s) == 0]
    if empty:
        raise ConfigError(
            f"client{empty[0]}'s shard has no samples ({clients} clients, --non-iid {non_iid}); "
            "use fewer --clients or a larger --non-iid"
        )
    return shards


def first_nodes(topology: Topology) -> list[str]:
    """The nodes of the first training step: all of them, or the first client's path."""
    if topology.strategy == "single":
        return [n.name for n in topology.nodes]
    first = topology.holders("x")[0]
    return [first, *(n.name for n in topology.nodes if first in n.inputs)]


class Strategy:
    """Base: plans epochs for ``topology`` on ``train`` (set up by :meth:`bind`)."""

    def __init__(
        self, topology: Topology, train: RunSplit, *, non_iid: float | None, seed: int
    ) -> None:
        self.topology, self.train, self.seed = topology, train, seed
        self.clients = [p for p in topology.parties if p in topology.holders("x")]
        self.shards = self._shards(non_iid)

    def _shards(self, non_iid: float | None) -> dict[str, RunSplit]:
        return {c: self.train for c in self.clients}

    def shard_sizes(self) -> dict[str, int]:
        return {c: len(s) for c, s in self.shards.items()}

    @property
    def passes(self) -> int:
        """How many times an epoch goes over each shard (SplitFed's local epochs; else 1)."""
        return int(self.topology.options.get("local_epochs", 1))

    def epoch(self, runtime: InProcessRuntime, batch_size: int, epoch: int) -> Iterator[Step]:
        raise NotImplementedError

    def eval_nodes(self) -> list[str]:
        """The nodes a prediction runs through (after training)."""
        return [n.name for n in self.topology.nodes]


class SingleGroup(Strategy):
    """Every node on every batch of the whole training split."""

    def _shards(self, non_iid: float | None) -> dict[str, RunSplit]:
        return {"all": self.train}

    def epoch(self, runtime: InProcessRuntime, batch_size: int, epoch: int) -> Iterator[Step]:
        nodes = [n.name for n in self.topology.nodes]
        for i, batch in enumerate(batches(self.train, batch_size, seed=self.seed, epoch=epoch)):
            yield Step(nodes, batch, list(self.topology.parties), i)


class _Sharded(Strategy):
    def _shards(self, non_iid: float | None) -> dict[str, RunSplit]:
        if non_iid is None:  # IID shards need only the number of samples
            y = torch.zeros(len(self.train), dtype=torch.int64)
        elif not self.train.holds("y"):
            raise ConfigError(
                "--non-iid shards the clients by their labels, which only the label party "
                "holds; a distributed run shards IID: drop --non-iid"
            )
        else:
            y = self.train.y
        parts = shard_indices(y, len(self.clients), non_iid=non_iid, seed=self.seed)
        return {c: self.train.subset(p) for c, p in zip(self.clients, parts)}

    def _readers(self, client: str) -> list[str]:
        """The nodes of the server side that read ``client``'s output (indexed once)."""
        if not hasattr(self, "_read_by"):
            self._read_by: dict[str, list[str]] = {}
            for n in self.topology.nodes:
                for src in dict.fromkeys(n.inputs):
                    self._read_by.setdefault(src, []).append(n.name)
        return list(self._read_by.get(client, []))


class Relay(_Sharded):
    """Clients in turns, one pass over the own shard each; weights handed on after a turn."""

    def epoch(self, runtime: InProcessRuntime, batch_size: int, epoch: int) -> Iterator[Step]:
        via = "server" if self.topology.options.get("relay") == "server" else None
        holder = self.clients[0] if epoch == 0 else self.clients[-1]  # who ended the last epoch
        for k, client in enumerate(self.clients):
            if holder != client:
                runtime.relay(holder, client, via=via)
                holder = client
            nodes = [client, *self._readers(client)]
            parties = list(dict.fromkeys(self.topology.node(n).party for n in nodes))
            shard = self.shards[client]
            for i, batch in enumerate(
                batches(shard, batch_size, seed=self.seed, epoch=epoch, client=k)
            ):
                yield Step(nodes, batch, parties, i)

    def eval_nodes(self) -> list[str]:
        last = self.clients[-1]
        return [last, *self._readers(last)]


class SplitFed(_Sharded):
    """Clients in parallel; client segments (and v1's server copies) averaged each round.

    v2 interleaves the clients step by step (its one server segment serves them in turn). In v1
    the clients of a round are independent (each trains its own copy of the round's client
    segment with its own server copy, averaged at the round's end), so one process takes them
    one after another (:meth:`_v1_round`): the same numbers, with one client segment and one
    server copy live at a time.
    """

    def epoch(self, runtime: InProcessRuntime, batch_size: int, epoch: int) -> Iterator[Step]:
        if self.topology.options.get("splitfed") == "v1":
            yield from self._v1_round(runtime, batch_size, epoch)
            return
        streams = [self._passes(c, k, batch_size, epoch) for k, c in enumerate(self.clients)]
        live = list(range(len(self.clients)))
        i = 0
        while live:
            for k in list(live):
                batch = next(streams[k], None)
                if batch is None:
                    live.remove(k)
                    continue
                client = self.clients[k]
                nodes = [client, *self._readers(client)]
                yield Step(nodes, batch, [client, "server"], i)
            i += 1
        sizes = {c: float(n) for c, n in self.shard_sizes().items()}
        runtime.fedavg({c: c for c in self.clients}, "fed", sizes)

    def _v1_round(self, runtime: InProcessRuntime, batch_size: int, epoch: int) -> Iterator[Step]:
        """A v1 round, client after client. Client k (and server copy k) start from the
        round's global state, shared copy-on-write by every client (and copy): its turn copies
        it, trains over the shard, adds the result to the fed server's (and the server's)
        running weighted sum and drops the copy. At the end each client gets the fed server's
        mean and every server copy the server's, again one shared buffer each."""
        sizes = {c: float(n) for c, n in self.shard_sizes().items()}
        copies = self._server_copies()
        server = runtime.parties.get("server")
        runtime.share_identical([(c, c) for c in self.clients])
        runtime.share_identical([("server", s) for s in copies.values()])
        fed_sum, server_sum = WeightedSum(dict(sizes)), WeightedSum(dict(sizes))
        for k, client in enumerate(self.clients):
            turn = _owned(runtime, [(client, client), ("server", copies[client])])
            for i, batch in enumerate(self._passes(client, k, batch_size, epoch)):
                yield Step([client, copies[client]], batch, [client, "server"], i)
            runtime.fed_add(client, client, "fed", fed_sum)
            if server is not None:
                server_sum.add(client, server.export_segment(copies[client]))
            for seg in turn:
                seg.disown()
        runtime.fed_return({c: c for c in self.clients}, "fed", fed_sum)
        if server is not None:
            average_into(server, copies, server_sum)

    def _passes(
        self, client: str, k: int, batch_size: int, epoch: int
    ) -> Iterator[dict[str, Tensor]]:
        """Client ``k``'s batches of round ``epoch``: its E local passes one after another,
        each in the order :func:`local_pass_epoch` gives it."""
        for e in range(self.passes):
            order = local_pass_epoch(epoch, self.passes, e)
            yield from batches(
                self.shards[client], batch_size, seed=self.seed, epoch=order, client=k
            )

    def _server_copies(self) -> dict[str, str]:
        return {c: self._readers(c)[0] for c in self.clients}

    def eval_nodes(self) -> list[str]:
        first = self.clients[0]
        return [first, *self._readers(first)]


def _owned(runtime: InProcessRuntime, held: list[tuple[str, str]]) -> list[FlatSegment]:
    """The flat segments of ``held`` ((party, node) pairs of this process), each with a
    private copy of its state (:meth:`FlatSegment.own`) for its turn."""
    turn = []
    for party, node in held:
        seg = runtime.parties[party].flat_segment(node) if party in runtime.parties else None
        if seg is not None:
            seg.own()
            turn.append(seg)
    return turn


@torch.no_grad()
def average_into(party: Party, copies: dict[str, str], acc: WeightedSum) -> None:
    """A party's own segment copies (client -> node) all take the mean of ``acc``: one shared
    buffer (copy-on-write) where they are flat segments, a copy each otherwise."""
    mean = acc.mean()
    for node in copies.values():
        seg = party.flat_segment(node)
        if seg is None:
            load_flat_state(_held(party, node), mean)
        else:
            seg.share(mean.to(seg.flat.device))
            mean = seg.flat


def _held(party: Party, node: str) -> nn.Module:
    module = party.segments[node]
    if module is None:
        raise ChannelError(f"{party.name} does not hold {node}, so it cannot average it")
    return module


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")
STRATEGIES.register("single", SingleGroup)
STRATEGIES.register("relay", Relay)
STRATEGIES.register("splitfed", SplitFed)
