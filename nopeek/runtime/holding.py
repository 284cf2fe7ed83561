"""The segments a party holds: their state in a checkpoint, and their hand-offs.

A relay client holds its segment only during its turn, and SplitFed's parties hand their
weights to the fed server and back. :class:`Holding` is the part of
:class:`~nopeek.runtime.party.Party` that keeps track of what it holds: ``state_dict`` /
``load_state_dict`` (what a checkpoint keeps of the party) and the weights messages (send,
receive, forward, load, release), which copy into kept flat segments
(:class:`~nopeek.runtime.segments.Spares`) instead of rebuilding a module each time.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any

from torch import Tensor, nn

from nopeek.compress import Compressor
from nopeek.errors import ChannelError
from nopeek.runtime.channel import WEIGHTS, Channel, Message
from nopeek.runtime.segments import FlatSegment, Spares
from nopeek.topology import Node, Topology


class Holding(ABC):
    """What :class:`~nopeek.runtime.party.Party` holds, and its hand-offs (a mixin: the
    attributes below are the party's own)."""

    name: str
    channel: Channel
    compress: dict[str, Compressor]
    nodes: dict[str, Node]
    segments: dict[str, nn.Module | None]
    factories: dict[str, Any]
    optimizer: Any
    _topo: Topology
    _spares: Spares

    @property
    def modules(self) -> list[nn.Module]:
        """The segments this party holds now, in node order."""
        return [m for m in self.segments.values() if m is not None]

    @property
    def held(self) -> list[str]:
        """The nodes whose segment this party holds now (a relay client between turns: none)."""
        return [n for n, m in self.segments.items() if m is not None]

    @abstractmethod
    def reset_optimizer(self) -> None:
        """A fresh optimizer over the segments held now (the party's own, which a hand-off or
        a restored state calls)."""

    def state_dict(self) -> dict[str, Any]:
        """This party's state as plain tensors and containers (what a checkpoint keeps of it).

        ``held``: the nodes whose segment it holds; ``modules``: their state dicts, in node
        order; ``optimizer``: the optimizer's state dict (None without one); ``compressors``:
        message kind -> its compressor's state. The hooks are not here: one hook instance may
        act for several parties, so the runtime keeps each once
        (:meth:`~nopeek.runtime.inprocess.InProcessRuntime.state_dict`).

        >>> import torch
        >>> from nopeek.models import build_model
        >>> from nopeek.runtime.channel import InProcessChannel
        >>> from nopeek.runtime.party import Party
        >>> from nopeek.topology import vanilla
        >>> def client():
        ...     topology = vanilla(build_model("mlp", input_shape=(4,), n_classes=2), ["fc1"])
        ...     return Party("client", topology, InProcessChannel())
        >>> trained, fresh = client(), client()
        >>> state = trained.state_dict()
        >>> state["held"], len(state["modules"]), state["optimizer"] is not None
        (['client'], 1, True)
        >>> fresh.load_state_dict(state)
        >>> all(torch.equal(a, b) for a, b in zip(trained.modules[0].state_dict().values(),
        ...                                       fresh.modules[0].state_dict().values()))
        True
        """
        return {
            "held": self.held,
            "modules": [m.state_dict() for m in self.modules],
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "compressors": {kind: c.state_dict() for kind, c in self.compress.items()},
        }

    def load_state_dict(self, state: dict[str, Any], *, segments_only: bool = False) -> None:
        """Put :meth:`state_dict`'s output back: hold exactly the segments ``held`` (a missing
        one built from its factory, then a fresh optimizer), load their weights, the optimizer
        and the compressors (``segments_only``: not these two, which a run's hooks may have
        wrapped: a copy of the weights). ``held`` may be absent (a state from before relays:
        the segments held now). Nothing of ``state`` is shared afterwards (an optimizer would
        otherwise keep the given moment tensors and step them in place). A state that does not
        fit raises ``KeyError``, ``ValueError`` or ``RuntimeError`` (the checkpoint reader
        turns them into one line)."""
        self._hold(state.get("held", self.held))
        for module, sd in zip(self.modules, state["modules"], strict=True):
            module.load_state_dict(sd)
        if segments_only:
            return
        if self.optimizer is not None:
            if state.get("optimizer") is None:
                raise KeyError(f"no optimizer state for {self.name}")
            self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        for kind, cs in state.get("compressors", {}).items():
            self.compress[kind].load_state_dict(copy.deepcopy(cs))

    def _hold(self, held: list[str]) -> None:
        """Hold exactly the segments ``held`` (built fresh where needed; a fresh optimizer then)."""
        if list(held) == self.held:
            return
        unknown = set(held) - set(self.segments)
        if unknown:
            raise KeyError(f"{self.name} has no node {', '.join(sorted(unknown))}")
        for node in self.segments:
            if node in held and self.segments[node] is None:
                self.segments[node] = self.factories[node]()
            elif node not in held:
                self.segments[node] = None
        self.reset_optimizer()

    # --- weights (relay, federated averaging) -------------------------------------------------
    def send_weights(self, node_name: str, receiver: str, *, step: int, release: bool) -> None:
        """Send the segment of ``node_name`` as one flat vector; ``release`` drops it here."""
        flat = self.export_segment(node_name)
        cut = self._topo.cut_of(node_name)
        self.channel.post(Message(WEIGHTS, cut, self.name, receiver, step, flat))
        if release:
            self._release(node_name)

    def _segment(self, node_name: str) -> nn.Module:
        """The segment of ``node_name``, which this party must hold now."""
        module = self.segments[node_name]
        if module is None:
            raise ChannelError(f"{self.name} does not hold the segment of {node_name} to send")
        return module

    def export_segment(self, node_name: str) -> Tensor:
        """A copy of the held segment of ``node_name``'s state as one flat vector (P,)."""
        return self._spares.export(node_name, self._segment(node_name))

    def flat_segment(self, node_name: str) -> FlatSegment | None:
        """The held segment of ``node_name`` as one flat buffer (None where it cannot be one):
        what shares a state copy-on-write (SplitFed v1's turns)."""
        return self._spares.flat(node_name, self._segment(node_name))

    def receive_weights(self, cut: str, sender: str, *, step: int) -> Tensor:
        """The flat state (P,) of a segment ending at ``cut``, sent by ``sender``."""
        msg = self.channel.recv(sender=sender, receiver=self.name, kind=WEIGHTS, cut=cut, step=step)
        return msg.tensor

    def forward_weights(self, flat: Tensor, cut: str, receiver: str, *, step: int) -> None:
        """Send a flat state this party holds (relayed or averaged) on to ``receiver``."""
        self.channel.post(Message(WEIGHTS, cut, self.name, receiver, step, flat.detach().clone()))

    def _release(self, node_name: str) -> None:
        """Give up the segment. One this party built itself is kept with its memory freed, so
        the next hand-off copies into it instead of rebuilding
        (:class:`~nopeek.runtime.segments.Spares`); the topology's own module (the initial
        weights) is only let go of."""
        module = self.segments[node_name]
        if module is not None and module is not self.nodes[node_name].module:
            self._spares.give_up(node_name, module)
        self.segments[node_name] = None
        self.reset_optimizer()

    def load_weights(self, node_name: str, flat: Tensor, *, fresh_optimizer: bool) -> None:
        """Put a flat state into the segment of ``node_name`` (taking it back if not held)."""
        module = self.segments[node_name]
        if module is None:
            module = self.segments[node_name] = self._spares.take(node_name)
        self._spares.load(node_name, module, flat)
        if fresh_optimizer:
            self.reset_optimizer()
