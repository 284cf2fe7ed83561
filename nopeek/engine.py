"""One step of split training over a topology: the protocol between parties.

Forward runs the nodes in order. On an edge between parties the sender applies its hooks to its
output, detaches it and sends it on the channel; the receiver re-attaches what arrived as a new
leaf. Backward runs the nodes in reverse: each node backpropagates its own losses and the
gradients it received for its output, then sends its input leaves' gradients back along the
edges they came from. So each party's autograd graph ends at its cuts, and the only thing that
crosses a cut backwards is the gradient message.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nopeek.channel import BACKWARD, FORWARD, Channel
from nopeek.hooks import CutHook
from nopeek.topology import DATA_PREFIX, Topology

# A penalty on one node's output, computed by that node's party: (raw data view, output) -> loss
Penalty = Callable[[dict[str, Tensor], Tensor], Tensor]


@dataclass
class StepOutput:
    """What one step produced: every node's output, and the losses by name (floats)."""

    outputs: dict[str, Tensor]
    losses: dict[str, float]


class SplitEngine:
    """Runs forward/backward passes of ``topology`` with every cut going through ``channel``."""

    def __init__(
        self,
        topology: Topology,
        channel: Channel,
        *,
        hooks: Sequence[CutHook] = (),
        penalties: dict[str, Penalty] | None = None,
    ) -> None:
        self.topology = topology
        self.channel = channel
        self.hooks = list(hooks)
        self.penalties = dict(penalties or {})  # node name -> penalty on its output
        self.criterion = nn.CrossEntropyLoss()

    def views(self, batch: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
        """Split a batch into what each party holds (the server never gets ``x``)."""
        out: dict[str, dict[str, Tensor]] = defaultdict(dict)
        for key, party in self.topology.owners.items():
            out[party][key] = batch[key]
        return out

    def step(self, batch: dict[str, Tensor], *, train: bool) -> StepOutput:
        """Forward (and, if ``train``, backward) one batch. ``batch``: x (N, ...), y (N,), ids (N,).

        Optimizer steps are the caller's; gradients accumulate in the segments' parameters.
        """
        views = self.views(batch)
        ids = batch.get("ids")
        with torch.set_grad_enabled(train):
            outputs, leaves, sent = self._forward(views, ids, train=train)
            terms = self._losses(views, outputs, train=train)
        losses = {name: float(t.detach()) for name, (_, t) in terms.items()}
        if train:
            self._backward(views, ids, terms, leaves, sent)
        return StepOutput(outputs, losses)

    def _forward(self, views, ids, *, train: bool):
        topo = self.topology
        outputs: dict[str, Tensor] = {}
        leaves: dict[tuple[str, str], Tensor] = {}
        sent: dict[tuple[str, str], Tensor] = {}
        for node in topo.nodes:
            args = []
            for src in node.inputs:
                if src.startswith(DATA_PREFIX):
                    args.append(views[node.party][src[len(DATA_PREFIX) :]])
                    continue
                z = outputs[src]
                if topo.crosses(src, node.name):
                    cut = topo.node(src).cut or src
                    for hook in self.hooks:
                        z = hook.forward(cut, z, training=train)
                    msg = self.channel.send(z.detach(), cut=cut, direction=FORWARD, ids=ids)
                else:
                    msg = z.detach()
                leaf = msg.requires_grad_(train)
                sent[(src, node.name)], leaves[(src, node.name)] = z, leaf
                args.append(leaf)
            outputs[node.name] = node.module(*args)
        return outputs, leaves, sent

    def _losses(self, views, outputs, *, train: bool) -> dict[str, tuple[str, Tensor]]:
        """Loss terms by name, each with the node it is rooted at."""
        terms: dict[str, tuple[str, Tensor]] = {}
        for obj in self.topology.objectives:
            loss = self.criterion(outputs[obj.node], views[obj.party][obj.labels])
            terms[obj.name] = (obj.node, obj.weight * loss)
        if train:
            for node_name, penalty in self.penalties.items():
                party = self.topology.node(node_name).party
                terms[f"penalty_{node_name}"] = (
                    node_name,
                    penalty(views[party], outputs[node_name]),
                )
        return terms

    def _backward(self, views, ids, terms, leaves, sent) -> None:
        topo = self.topology
        roots: dict[str, list[tuple[Tensor, Tensor | None]]] = defaultdict(list)
        for node_name, term in terms.values():
            roots[node_name].append((term, None))
        for node in reversed(topo.nodes):
            todo = [(t, g) for t, g in roots[node.name] if t.requires_grad]
            if todo:
                torch.autograd.backward([t for t, _ in todo], [g for _, g in todo])
            for src in node.inputs:
                if src.startswith(DATA_PREFIX):
                    continue
                leaf = leaves[(src, node.name)]
                grad = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
                if topo.crosses(src, node.name):
                    grad = self._send_back(node, src, grad, leaf, views, ids)
                roots[src].append((sent[(src, node.name)], grad))

    def _send_back(self, node, src, grad, leaf, views, ids) -> Tensor:
        """The receiving party's hooks transform the gradient, then it crosses the cut."""
        cut = self.topology.node(src).cut or src
        labels = next(
            (
                views[node.party][o.labels]
                for o in self.topology.objectives
                if o.party == node.party
            ),
            None,
        )
        for hook in self.hooks:
            grad = hook.backward(cut, grad, activation=leaf.detach(), labels=labels)
        return self.channel.send(grad.detach(), cut=cut, direction=BACKWARD, ids=ids)
