"""The in-process runtime: every party of a topology scheduled in this process.

The runtime owns one :class:`~nopeek.runtime.party.Party` per party and a shared
:class:`~nopeek.runtime.channel.InProcessChannel`. For each step it hands every party *its own*
view of the batch, then calls ``forward`` on each node of the step in execution order and
``backward`` in reverse, each on the node's own party: the global order of a step is the schedule,
and every tensor that moves between parties moves as a message. A distributed runtime runs the same
schedule with each process calling only its own party's actions.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nopeek.compress import Compressor
from nopeek.errors import ChannelError
from nopeek.hooks import CutHook
from nopeek.runtime.channel import Channel, InProcessChannel
from nopeek.runtime.party import Party, Penalty
from nopeek.topology import Topology


@dataclass
class StepOutput:
    """What one step produced: every node's output, and the losses by name (floats)."""

    outputs: dict[str, Tensor]
    losses: dict[str, float]


class InProcessRuntime:
    """Runs forward/backward passes of ``topology`` with every cut going through ``channel``.

    ``hooks`` maps a party to its hooks (defenses, malicious behaviour); a plain sequence gives
    every party the same hooks (the two-party shorthand). ``penalties`` maps a node to a
    penalty on its output, computed by the node's party (NoPeek). ``compress`` maps a party to
    its own compressors by message kind (:func:`nopeek.compress.for_party`).

    >>> from nopeek.models import build_model
    >>> from nopeek.topology import vanilla
    >>> rt = InProcessRuntime(vanilla(build_model("mlp", input_shape=(4,), n_classes=2), ["fc1"]))
    >>> out = rt.step({"x": torch.rand(3, 4), "y": torch.tensor([0, 1, 0]),
    ...                "ids": torch.arange(3)}, train=True)
    >>> sorted(out.losses), [r.kind for r in rt.channel.log.records]
    (['task'], ['activation', 'gradient'])
    """

    def __init__(
        self,
        topology: Topology,
        channel: Channel | None = None,
        *,
        hooks: Sequence[CutHook] | dict[str, list[CutHook]] = (),
        penalties: dict[str, Penalty] | None = None,
        lr: float = 1e-3,
        local: Sequence[str] | None = None,
        compress: dict[str, dict[str, Compressor]] | None = None,
    ) -> None:
        self.topology = topology
        self.local = list(local) if local is not None else list(topology.parties)
        self.channel = channel if channel is not None else InProcessChannel()
        by_party = hooks if isinstance(hooks, dict) else {p: list(hooks) for p in topology.parties}
        penalties = dict(penalties or {})
        self.parties: dict[str, Party] = {
            p: Party(
                p,
                topology,
                self.channel,
                hooks=by_party.get(p, []),
                penalties={n: f for n, f in penalties.items() if topology.node(n).party == p},
                lr=lr,
                compress=(compress or {}).get(p),
            )
            for p in self.local
        }
        self.tick = 0  # message step counter: every party derives the same one from the schedule
        self._all = tuple(n.name for n in topology.nodes)
        self._plans: dict[tuple[str, ...], tuple[frozenset[str], list[str], list[str]]] = {}
        self._viewing: set[str] = set(self.parties)  # the parties that may hold a view

    @property
    def hooks(self) -> list[CutHook]:
        """Every hook instance of every party (each once)."""
        return self._hooks_of(self.parties)

    def _hooks_of(self, names: Iterable[str]) -> list[CutHook]:
        seen: dict[int, CutHook] = {}
        for name in names:
            for h in self.parties[name].hooks:
                seen.setdefault(id(h), h)
        return list(seen.values())

    def state_dict(self) -> dict[str, Any]:
        """The state of the parties this runtime runs: ``parties`` (party ->
        :meth:`Party.state_dict <nopeek.runtime.party.Party.state_dict>`) and ``hooks`` (each
        hook instance's state once, in :attr:`hooks` order: one instance may act for several
        parties)."""
        return {
            "parties": {n: p.state_dict() for n, p in self.parties.items()},
            "hooks": [h.state_dict() for h in self.hooks],
        }

    def load_state_dict(
        self,
        state: dict[str, Any],
        *,
        parties: Sequence[str] | None = None,
        segments_only: bool = False,
    ) -> None:
        """Put :meth:`state_dict`'s output back into ``parties`` (default: every party here)
        and their hooks (``segments_only``: the segments alone, no optimizer, compressor or
        hook state: a copy of the trained weights in a runtime set up without the run's hooks).

        ``parties`` names a subset where ``state`` is one party's own (a distributed run's
        checkpoint, restored into an in-process runtime): its hook states are that party's.

        >>> from nopeek.models import build_model
        >>> from nopeek.topology import vanilla
        >>> def runtime():
        ...     return InProcessRuntime(vanilla(build_model("mlp", input_shape=(4,), n_classes=2),
        ...                                     ["fc1"]))
        >>> trained, fresh = runtime(), runtime()
        >>> fresh.load_state_dict(trained.state_dict())
        >>> x = torch.rand(3, 4)
        >>> a, b = (r.parties["client"].modules[0](x) for r in (trained, fresh))
        >>> torch.equal(a, b)
        True
        """
        names = list(self.parties) if parties is None else list(parties)
        for name in names:
            self.parties[name].load_state_dict(state["parties"][name], segments_only=segments_only)
        if not segments_only:
            for hook, hs in zip(self._hooks_of(names), state["hooks"], strict=True):
                hook.load_state_dict(copy.deepcopy(hs))  # nothing of ``state`` shared after

    def views(
        self, batch: dict[str, Tensor], parties: Sequence[str] | None = None
    ) -> dict[str, dict[str, Tensor]]:
        """What each party of this process (or of ``parties``) holds of ``batch`` (its own
        keys, plus the sample ids)."""
        views = self.topology.views(batch, self.local if parties is None else list(parties))
        if "ids" in batch:
            for view in views.values():
                view["ids"] = batch["ids"]
        return views

    def step(
        self, batch: dict[str, Tensor], *, train: bool, nodes: Sequence[str] | None = None
    ) -> StepOutput:
        """Forward (and, if ``train``, backward) one batch through ``nodes`` (default: all).

        ``batch``: x (N, ...), y (N,), ids (N,). Optimizer steps are the caller's; gradients
        accumulate in the segments' parameters.
        """
        plan = tuple(nodes) if nodes is not None else self._all
        active, taking_part, mine = self._plan(plan)
        self._give_views(batch, taking_part)
        step, self.tick = self.tick, self.tick + 1
        for name in mine:
            self._party_of(name).forward(name, step=step, train=train, active=active)
        if train:
            for name in reversed(mine):
                self._party_of(name).backward(name, step=step, active=active)
        outputs = {n: self._party_of(n).outputs[n] for n in mine}
        losses: dict[str, float] = {}
        for name in taking_part:  # the others sent nothing and computed no loss
            losses |= self.parties[name].end_step()
        if isinstance(self.channel, InProcessChannel) and self.channel.pending():
            raise ChannelError("a message was sent that no party received; the schedule is wrong")
        return StepOutput(outputs, losses)

    def _plan(self, plan: tuple[str, ...]) -> tuple[frozenset[str], list[str], list[str]]:
        """A step plan's active nodes, its parties here (in party order) and its nodes here;
        worked out once per plan, so a step costs nothing per party that sits it out."""
        known = self._plans.get(plan)
        if known is None:
            parties = {self.topology.node(n).party for n in plan}
            known = self._plans[plan] = (
                frozenset(plan),
                [p for p in self.parties if p in parties],
                [n for n in plan if self.topology.node(n).party in self.parties],
            )
        return known

    def _give_views(self, batch: dict[str, Tensor], taking_part: list[str]) -> None:
        """Each party of the step gets its view of ``batch``; one sitting it out gets none."""
        views = self.views(batch, taking_part)
        for name in self._viewing.difference(taking_part):
            self.parties[name].view = {}
        for name in taking_part:
            self.parties[name].view = views[name]
        self._viewing = set(taking_part)

    def counted_step(
        self, batch: dict[str, Tensor], *, nodes: Sequence[str] | None = None
    ) -> tuple[dict[str, float], StepOutput]:
        """A training step with every party's FLOPs counted (``FlopCounterMode`` around its
        segments' forward and backward, losses and penalties included, hooks not): returns
        ``({party: flops}, output)``."""
        for party in self.parties.values():
            party.flops = 0.0
        try:
            out = self.step(batch, train=True, nodes=nodes)
            counts = {n: p.flops for n, p in self.parties.items() if p.flops}
        finally:
            for party in self.parties.values():
                party.flops = None
        return counts, out

    def _party_of(self, node: str) -> Party:
        return self.parties[self.topology.node(node).party]

    def train_mode(self, mode: bool) -> None:
        for party in self.parties.values():
            party.train_mode(mode)

    @torch.no_grad()
    def relay(self, sender: str, receiver: str, *, via: str | None = None) -> None:
        """Hand the client segment of node ``sender`` to node ``receiver`` (each node named as
        its party), directly or through party ``via``, which forwards it; the sender keeps no
        copy and the receiver starts a fresh optimizer."""
        step, self.tick = self.tick, self.tick + 1
        cut = self.topology.cut_of(sender)
        local = self.parties
        if sender in local:
            local[sender].send_weights(sender, via or receiver, step=step, release=True)
        if via is not None and via in local:
            hop = local[via]
            hop.forward_weights(
                hop.receive_weights(cut, sender, step=step), cut, receiver, step=step
            )
        if receiver in local:
            flat = local[receiver].receive_weights(cut, via or sender, step=step)
            local[receiver].load_weights(receiver, flat, fresh_optimizer=True)

    @torch.no_grad()
    def fedavg(self, nodes: dict[str, str], fed: str, weights: dict[str, float]) -> None:
        """Federated averaging of client segments: each client (``nodes``: client -> node) sends
        its segment to ``fed``, which returns the mean weighted by ``weights`` (shard sizes).

        Streaming: ``fed`` adds each client's segment to one running sum as it arrives and each
        client takes the mean as soon as it is sent, so neither ``fed`` nor the channel ever
        holds more than one client's segment besides the sum (the same numbers as
        :func:`weighted_mean` over all of them)."""
        step, self.tick = self.tick, self.tick + 1
        acc = WeightedSum({c: weights[c] for c in nodes})
        for client, node in nodes.items():
            self._add_to(acc, client, node, fed, step)
        self._return_mean(acc, nodes, fed, step, share=False)

    @torch.no_grad()
    def fed_add(self, client: str, node: str, fed: str, acc: WeightedSum) -> None:
        """One client's part of a streamed federated average: ``client`` sends the segment of
        ``node`` to ``fed``, which adds it to the running weighted sum ``acc`` (one message).
        :meth:`fed_return` ends the round; together they move :meth:`fedavg`'s messages."""
        step, self.tick = self.tick, self.tick + 1
        self._add_to(acc, client, node, fed, step)

    @torch.no_grad()
    def fed_return(self, nodes: dict[str, str], fed: str, acc: WeightedSum) -> None:
        """``fed`` sends the mean of ``acc`` to every client (``nodes``: client -> node), one
        message at a time; each takes it as its segment's state. The clients of this process
        that received the same state share one buffer of it (copy-on-write:
        :meth:`~nopeek.runtime.segments.FlatSegment.share`), so K clients between rounds cost
        one segment's memory."""
        step, self.tick = self.tick, self.tick + 1
        self._return_mean(acc, nodes, fed, step, share=True)

    def _add_to(self, acc: WeightedSum, client: str, node: str, fed: str, step: int) -> None:
        """``client`` sends the segment of ``node`` to ``fed``, which adds it to ``acc``."""
        local = self.parties
        if client in local:
            local[client].send_weights(node, fed, step=step, release=False)
        if fed in local:
            cut = self.topology.cut_of(node)
            acc.add(client, local[fed].receive_weights(cut, client, step=step))

    def _return_mean(
        self, acc: WeightedSum, nodes: dict[str, str], fed: str, step: int, *, share: bool
    ) -> None:
        """``fed`` sends the mean of ``acc`` to each client in turn, which loads it; with
        ``share``, clients of this process that hold a flat segment and receive the same bytes
        keep one buffer of them (not for clients that train their segments in place between
        averages, as SplitFed v2's do)."""
        local = self.parties
        mean = acc.mean() if fed in local else None
        shared: Tensor | None = None
        for client, node in nodes.items():
            cut = self.topology.cut_of(node)
            if mean is not None:
                local[fed].forward_weights(mean, cut, client, step=step)
            if client not in local:
                continue
            flat = local[client].receive_weights(cut, fed, step=step)
            seg = local[client].flat_segment(node) if share else None
            if seg is None:
                local[client].load_weights(node, flat, fresh_optimizer=False)
                continue
            flat = flat.to(seg.flat.device)
            if shared is not None and torch.equal(flat, shared):
                flat = shared  # the same bytes: keep one buffer of them
            seg.share(flat)
            shared = flat

    @torch.no_grad()
    def share_identical(self, held: Sequence[tuple[str, str]]) -> None:
        """Segments of this process (``held``: (party, node) pairs) whose state equals the
        first one's, bit for bit, point into one buffer of it (copy-on-write): a SplitFed round
        starts with one buffer for the K equal client segments (and v1's server copies)."""
        first: Tensor | None = None
        for party, node in held:
            seg = self.parties[party].flat_segment(node) if party in self.parties else None
            if seg is None:
                continue
            if first is None:
                seg.share(seg.flat)  # no longer this segment's alone
                first = seg.flat
            elif seg.flat is not first and torch.equal(seg.flat, first):
                seg.share(first)


class WeightedSum:
    """The weighted mean of flat vectors added one at a time, in float64 (only the running sum
    is kept): :func:`weighted_mean`'s numbers, bit for bit, when added in its order.

    >>> acc = WeightedSum({"a": 1.0, "b": 3.0})
    >>> acc.add("a", torch.tensor([4.0])); acc.add("b", torch.tensor([8.0]))
    >>> acc.mean().tolist()
    [7.0]
    """

    def __init__(self, weights: dict[str, float]) -> None:
        self.weights = weights
        self.total = sum(weights.values())
        self._acc: Tensor | None = None

    def add(self, key: str, flat: Tensor) -> None:
        """Add ``flat`` (P,) with the weight of ``key``."""
        term = flat.double() * (self.weights[key] / self.total)
        self._acc = term if self._acc is None else self._acc.add_(term)

    def mean(self) -> Tensor:
        """The weighted mean (P,) float32 of what was added."""
        if self._acc is None:
            raise ChannelError("no segment was added to the average")
        return self._acc.to(torch.float32)


def weighted_mean(flats: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """sum_k w_k * flat_k / sum_k w_k, accumulated in float64 (P,)."""
    acc = WeightedSum({k: weights[k] for k in flats})
    for key, flat in flats.items():
        acc.add(key, flat)
    return acc.mean()
