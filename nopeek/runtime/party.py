"""One party of a split-learning run: its nodes, its data view, its optimizer, its hooks.

A :class:`Party` runs only its own nodes of the topology. It reads only its own data view (set
for each step by whoever feeds it: the in-process runtime or, in a distributed run, the party's
own loader) and what arrives on its channel. What it sent it keeps, keyed by (step, node),
until the gradient for it comes back; nothing of another party is reachable from its code, so
the same class runs unchanged when every party is its own process.

The step protocol (the same for every topology): ``forward(node)`` for the nodes of a step in
execution order, then ``backward(node)`` in reverse order. A node's forward receives its
cross-party inputs (activation messages) and re-attaches them as leaves, runs the segment,
computes the losses and penalties rooted at it, and sends its output once to every other party
that reads it (after the party's forward hooks: clipping, noise). Its backward receives the
gradients for what it sent, backpropagates its own losses with them, and sends each input
leaf's gradient back to the party it came from (after the party's backward hooks: label-gradient
defenses, or a malicious server's substitution).

A party's compressors (``compress``: message kind -> :class:`~nopeek.compress.Compressor`) act
last, between its hooks and its channel: the message posted carries the compressed payload, and
a receiving party decodes every message before it uses it (:meth:`Message.value`). The gradient
that comes back for a compressed activation is applied to the activation as it was before
compression (a straight-through estimate).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from nopeek.compress import Compressor, Packed
from nopeek.errors import ChannelError
from nopeek.hooks import CutHook
from nopeek.runtime.channel import ACTIVATION, GRADIENT, WEIGHTS, Channel, Message
from nopeek.runtime.holding import Holding
from nopeek.runtime.segments import Spares
from nopeek.topology import DATA_PREFIX, Node, Topology

# A penalty on one node's output, computed by that node's party: (its data view, output) -> loss
Penalty = Callable[[dict[str, Tensor], Tensor], Tensor]


class Party(Holding):
    """The live state of one party: segments, optimizer, hooks, data view, messages in flight.

    ``modules`` (one per owned node, ``None`` while the party does not hold that segment) and
    ``optimizer`` are what hooks such as DP-SGD see and replace. What it holds, its state and
    its weights hand-offs are :class:`~nopeek.runtime.holding.Holding`'s.
    """

    def __init__(
        self,
        name: str,
        topology: Topology,
        channel: Channel,
        *,
        hooks: list[CutHook] | None = None,
        penalties: dict[str, Penalty] | None = None,
        lr: float = 1e-3,
        compress: dict[str, Compressor] | None = None,
    ) -> None:
        self.name = name
        self.channel = channel
        self.hooks = list(hooks or [])
        self.compress = dict(compress or {})  # message kind -> this party's own compressor
        self.penalties = {k: v for k, v in (penalties or {}).items()}
        self.lr = lr
        self.criterion = nn.CrossEntropyLoss()
        # What this party knows of the others: the graph (who reads what), never their segments.
        self._topo = topology.skeleton()
        self.nodes: dict[str, Node] = {n.name: n for n in topology.nodes_of(name)}
        self.segments: dict[str, nn.Module | None] = {n: v.module for n, v in self.nodes.items()}
        self.factories = {n: topology.factories[n] for n in self.nodes if n in topology.factories}
        self.objectives = [o for o in topology.objectives if o.party == name]
        self.optimizer: Any = None
        self.reset_optimizer()
        self.view: dict[str, Tensor] = {}
        self.flops: float | None = None  # set to 0.0 to count this party's FLOPs
        self._spares = Spares(self.factories)  # segments given up, kept without their memory
        # who reads what, per step plan (fixed per topology): (node, active) -> receivers, and
        # (src, node, active) -> whether node is this party's last reader of src in backward
        self._routes: dict[tuple[str, frozenset[str]], list[str]] = {}
        self._used: dict[tuple[str, frozenset[str]], list[str]] = {}  # (node, active) -> inputs
        self._last_readers: dict[tuple[str, str, frozenset[str]], bool] = {}
        self._clear()

    # --- state (what it holds, checkpoints and hand-offs: :class:`Holding`) ------------------
    def reset_optimizer(self) -> None:
        """A fresh Adam over the segments held now (none if they have no parameters)."""
        params = list(dict.fromkeys(p for m in self.modules for p in m.parameters()))
        self.optimizer = torch.optim.Adam(params, lr=self.lr) if params else None

    def zero_grad(self) -> None:
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)

    def step_optimizer(self) -> None:
        if self.optimizer is not None:
            self.optimizer.step()

    def train_mode(self, mode: bool) -> None:
        for m in self.modules:
            m.train(mode)

    def _clear(self) -> None:
        self.outputs: dict[str, Tensor] = {}
        self.leaves: dict[str, Tensor] = {}  # src node -> re-attached leaf (one per src)
        self.read: dict[str, Tensor] = {}  # src node -> what the segment reads (after receive)
        self.sent: dict[tuple[int, str], Tensor] = {}  # (step, node) -> output with its graph
        self.terms: dict[str, tuple[str, Tensor]] = {}  # loss name -> (node, loss)
        self.roots: dict[str, list[tuple[Tensor, Tensor | None]]] = defaultdict(list)

    def end_step(self) -> dict[str, float]:
        """Forget the step's tensors; returns this party's loss values by name."""
        if self.sent:
            pending = ", ".join(f"{node} (step {s})" for s, node in self.sent)
            raise ChannelError(f"{self.name} still waits for the gradient of {pending}")
        losses = {name: float(t.detach()) for name, (_, t) in self.terms.items()}
        self._clear()
        return losses

    # --- the step protocol --------------------------------------------------------------------
    def forward(self, node_name: str, *, step: int, train: bool, active: frozenset[str]) -> None:
        """Run own node ``node_name`` of step ``step``; ``active`` are the step's nodes."""
        active = active if isinstance(active, frozenset) else frozenset(active)
        node = self.nodes[node_name]
        module = self.segments[node_name]
        if module is None:
            raise ChannelError(
                f"{self.name} has no weights for {node_name} at step {step}; "
                "the relay must hand them over first"
            )
        with torch.set_grad_enabled(train):
            args = [self._input(src, step, train, node_name) for src in self._uses(node, active)]
            with self._counting():
                out = module(*args)
                self._losses(node_name, out, train)
            self.outputs[node_name] = out if train else self._predicted(node_name, out)
        for k, receiver in enumerate(self._receivers(node_name, active)):
            z = out
            for hook in self.hooks:
                z = hook.forward(self._topo.cut_of(node_name), z, training=train)
            if train and k == 0:
                self._hook_penalties(node_name, z)
            self._post(ACTIVATION, node_name, receiver, step, z.detach(), training=train)
            if train:
                self.sent[(step, node_name)] = z

    def backward(self, node_name: str, *, step: int, active: frozenset[str]) -> None:
        """Backpropagate own node ``node_name``: its losses and the gradients of what it sent."""
        active = active if isinstance(active, frozenset) else frozenset(active)
        node = self.nodes[node_name]
        roots: list[tuple[Tensor, Tensor | None]] = [
            (t, None) for n, t in self.terms.values() if n == node_name
        ]
        roots += self.roots.pop(node_name, [])
        for receiver in self._receivers(node_name, active):
            sent = self.sent.pop((step, node_name))
            grad = self._received(
                self.channel.recv(
                    sender=receiver,
                    receiver=self.name,
                    kind=GRADIENT,
                    cut=self._topo.cut_of(node_name),
                    step=step,
                )
            ).value()
            roots.append((sent, grad.to(sent.dtype)))
        todo = [(t, g) for t, g in roots if t.requires_grad]
        if todo:
            with self._counting():
                torch.autograd.backward([t for t, _ in todo], [g for _, g in todo])
        for src in self._uses(node, active):
            if not src.startswith(DATA_PREFIX) and self._is_last_reader(src, node_name, active):
                self._send_back(src, step)

    # --- pieces -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _counting(self) -> Iterator[None]:
        """Count FLOPs of what runs inside into ``self.flops`` when counting is on."""
        if self.flops is None:
            yield
            return
        with FlopCounterMode(display=False) as counter:
            yield
        self.flops += float(counter.get_total_flops())

    def _uses(self, node: Node, active: frozenset[str]) -> list[str]:
        """The inputs ``node`` reads in a step of ``active`` nodes: its data and the active
        sources (worked out once per plan: a server read by K clients reads one per step)."""
        key = (node.name, active)
        if key not in self._used:
            self._used[key] = [s for s in node.inputs if s.startswith(DATA_PREFIX) or s in active]
        return self._used[key]

    def _input(self, src: str, step: int, train: bool, node_name: str) -> Tensor:
        if src.startswith(DATA_PREFIX):
            return self.view[src[len(DATA_PREFIX) :]]
        if src in self.read:  # a second own node reading the same input
            return self.read[src]
        src_party = self._topo.node(src).party
        if src_party == self.name:
            z = self.outputs[src].detach()
        else:
            msg = self.channel.recv(
                sender=src_party,
                receiver=self.name,
                kind=ACTIVATION,
                cut=self._topo.cut_of(src),
                step=step,
            )
            z = self._received(msg).value()
        leaf = z.requires_grad_(train)
        self.leaves[src] = leaf
        read = leaf if src_party == self.name else self._receive(src, leaf, node_name, train)
        self.read[src] = read
        return read

    def _receive(self, src: str, leaf: Tensor, node_name: str, train: bool) -> Tensor:
        """The hooks' ``receive`` of an activation from another party (identity without such
        hooks); a loss term one returns joins ``node_name``'s losses while training."""
        z, cut, sender = leaf, self._topo.cut_of(src), self._topo.node(src).party
        for hook in self.hooks:
            if not hasattr(hook, "receive"):
                continue
            z, term = hook.receive(cut, z, sender=sender, training=train)
            if term is not None and train:
                self.terms[f"{hook.name}_{src}"] = (node_name, term)
        return z

    def _received(self, msg: Message) -> Message:
        """``msg``, once its sample ids are those of this party's own batch: a receiver never
        pairs a peer's activation or gradient with other samples (its labels, its inputs)."""
        mine = self.view.get("ids")
        if msg.ids is None or mine is None or torch.equal(msg.ids.cpu(), mine.cpu()):
            return msg
        theirs, ours = msg.ids.tolist(), mine.tolist()
        where = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), None)
        if where is None:
            detail = f"{len(theirs)} samples where this party's batch has {len(ours)}"
        else:
            detail = (
                f"sample {theirs[where]} at row {where} where this party's batch has {ours[where]}"
            )
        raise ChannelError(
            f"{msg.sender}'s {msg.kind} at cut {msg.cut!r} (step {msg.step}) carries {detail}: "
            "the parties pair different samples; start every party with the same --seed, data "
            "and --batch-size"
        )

    def _losses(self, node_name: str, out: Tensor, train: bool) -> None:
        for obj in self.objectives:
            if obj.node == node_name:
                target = self.view[obj.labels]
                if train:
                    target = self._targets(target, n_classes=out.shape[1])
                loss = self.criterion(out, target)
                self.terms[obj.name] = (node_name, obj.weight * loss)
        if train and node_name in self.penalties:
            self.terms[f"penalty_{node_name}"] = (
                node_name,
                self.penalties[node_name](self.view, out),
            )

    def _targets(self, labels: Tensor, *, n_classes: int) -> Tensor:
        """The labels as the hooks' ``targets`` replace them for the training loss."""
        for hook in self.hooks:
            if hasattr(hook, "targets"):
                labels = hook.targets(labels, ids=self.view.get("ids"), n_classes=n_classes)
        return labels

    def _predicted(self, node_name: str, logits: Tensor) -> Tensor:
        """An objective node's logits as the hooks' ``predict`` map them (outside training)."""
        if not any(o.node == node_name for o in self.objectives):
            return logits
        for hook in self.hooks:
            if hasattr(hook, "predict"):
                logits = hook.predict(logits)
        return logits

    def _hook_penalties(self, node_name: str, z: Tensor) -> None:
        """Loss terms the hooks add on a message this party sends from its own raw inputs.

        ``z`` is the message as sent (after the forward hooks, still attached to the graph);
        ``x`` is this party's own input of the node. Only nodes fed by this party's data
        qualify (a relay's or a tail's output is not a function of its own inputs).
        """
        data = [i for i in self.nodes[node_name].inputs if i.startswith(DATA_PREFIX)]
        if not data:
            return
        x, cut = self.view[data[0][len(DATA_PREFIX) :]], self._topo.cut_of(node_name)
        for hook in self.hooks:
            term = hook.penalty(cut, x, z) if hasattr(hook, "penalty") else None
            if term is not None:
                self.terms[f"{hook.name}_{node_name}"] = (node_name, term)

    def _receivers(self, node_name: str, active: frozenset[str]) -> list[str]:
        """Other parties reading this node's output in this step, in order of first read."""
        key = (node_name, active)
        if key not in self._routes:
            self._routes[key] = self._find_receivers(node_name, active)
        return self._routes[key]

    def _find_receivers(self, node_name: str, active: frozenset[str]) -> list[str]:
        readers = [
            n.party
            for n in self._topo.nodes
            if node_name in n.inputs and n.name in active and n.party != self.name
        ]
        return list(dict.fromkeys(readers))

    def _is_last_reader(self, src: str, node_name: str, active: frozenset[str]) -> bool:
        """Whether ``node_name`` is the last of this party's readers of ``src`` to run backward
        (the first in forward order), so the leaf's gradient is complete."""
        key = (src, node_name, active)
        if key not in self._last_readers:
            self._last_readers[key] = self._find_last_reader(src, node_name, active)
        return self._last_readers[key]

    def _find_last_reader(self, src: str, node_name: str, active: frozenset[str]) -> bool:
        readers = [n.name for n in self._topo.nodes if src in n.inputs and n.name in active]
        mine = [r for r in readers if r in self.nodes]
        return mine[0] == node_name

    def _send_back(self, src: str, step: int) -> None:
        leaf = self.leaves[src]
        grad = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        src_party = self._topo.node(src).party
        if src_party == self.name:
            self.roots[src].append((self.outputs[src], grad))
            return
        cut = self._topo.cut_of(src)
        labels = next((self.view[o.labels] for o in self.objectives), None)
        for hook in self.hooks:
            grad = hook.backward(cut, grad, activation=leaf.detach(), labels=labels)
        self._post(GRADIENT, src, src_party, step, grad.detach(), training=True)

    def _post(
        self,
        kind: str,
        node_name: str,
        receiver: str,
        step: int,
        tensor: Tensor,
        *,
        training: bool,
    ) -> None:
        """Post ``tensor`` (compressed, if this party compresses ``kind`` messages)."""
        cut = self._topo.cut_of(node_name) if kind != WEIGHTS else node_name
        ids = self.view.get("ids")
        codec, packed = self.compress.get(kind), None
        if codec is not None:
            packed = Packed(codec, tuple(tensor.shape), tensor.dtype)
            tensor = codec.compress(tensor, stream=f"{cut}>{receiver}", training=training)
        self.channel.post(Message(kind, cut, self.name, receiver, step, tensor, ids, packed))


__all__ = ["Party", "Penalty"]
