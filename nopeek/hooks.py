"""Hooks: how defenses and malicious parties change what crosses a cut.

A :class:`CutHook` is called by the party that *sends* a message: ``forward`` by the data side
before an activation leaves (e.g. clipping and noise), ``backward`` by the receiving side before
the gradient goes back (e.g. label-gradient defenses; a malicious server substituting its own
gradient). ``penalty`` adds a loss term at the sender, on a message it computed from its own raw
inputs (an attacker-aware defense). ``setup`` sees the training context before the first step
(to calibrate noise or wrap a party's optimizer); ``metrics`` adds entries to ``metrics.json``.

Three calls act on the receiving side, at the parties that hold labels or read a cut:
``receive`` transforms an activation a party received before its segment reads it (a trainable
layer of the receiver's own, whose gradient is what goes back: MID's bottleneck), ``targets``
replaces the labels its loss compares the logits with while training (label DP, CAE's soft
labels), and ``predict`` maps its logits to what it predicts outside training (CAE's decoder).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from torch import Tensor, nn


@dataclass
class PartyState:
    """What one party owns during training: its segments and its optimizer."""

    name: str
    modules: list[nn.Module]
    optimizer: Any  # torch.optim.Optimizer (or an Opacus DPOptimizer)


class PartyLike(Protocol):
    """What a hook sees of a party: a :class:`PartyState`, or the runtime's live
    :class:`~nopeek.runtime.party.Party` (whose optimizer a hook such as DP-SGD replaces)."""

    name: str
    optimizer: Any

    @property
    def modules(self) -> list[nn.Module]: ...


@dataclass
class TrainContext:
    """Facts a hook may need before training: sizes, schedule, parties, seed, delta."""

    n_train: int
    batch_size: int
    epochs: int
    seed: int
    delta: float
    parties: Mapping[str, PartyLike]
    data_party: str
    label_party: str
    device: Any
    extra: dict[str, Any] = field(default_factory=dict)


class CutHook:
    """Identity hook; subclasses override what they change. All tensors are ``(N, ...)``.

    ``acts_at`` says which parties apply it (see :func:`bind_hooks`): ``"data"`` (the parties
    holding raw inputs: cut noise, DP-SGD), ``"labels"`` (the parties holding labels:
    label-gradient defenses), ``"server"`` (the party receiving the data parties' activations: a
    malicious server), or ``None`` (every party, one shared instance: custom hooks).
    ``party_index`` numbers the instances of one hook (0 for the first party).

    What a hook needs of a run is declared here, as class attributes, so that no lower layer
    names a built-in: :func:`bind_hooks` refuses a hook on a topology it cannot serve, and the
    attack harness answers queries through the hooks that act on them.

    - ``follows_relay``: whether the hook can follow a client segment through a many-clients
      relay (each turn hands the segment's weights on and starts a fresh optimizer, so a hook
      that wraps the optimizer, like DP-SGD, cannot).
    - ``acts_on_queries``: whether :meth:`forward` changes what the data party sends *outside
      training*; an attacker's black-box query to the client then passes through it, as the
      deployed client's answer would (:func:`nopeek.defenses.sender_transform`). Such a hook is
      set up for the queries with a :class:`TrainContext` that names no parties.
    - ``one_sender``: whether it attacks one client's cut, so a topology with several sending
      clients is refused.
    """

    name = "identity"
    acts_at: str | None = None
    party_index = 0
    follows_relay: ClassVar[bool] = True
    acts_on_queries: ClassVar[bool] = False
    one_sender: ClassVar[bool] = False

    def setup(self, ctx: TrainContext) -> None:
        """Called once before training (and again on resume, before loading state)."""

    def forward(self, cut: str, z: Tensor, *, training: bool) -> Tensor:
        """Transform the activation ``z`` (still attached to the sender's graph) before sending."""
        return z

    def public(self, cut: str, z: Tensor) -> Tensor:
        """The part of :meth:`forward` outside training that holds no secret: what an attacker
        who knows the mechanism and its public parameters (Kerckhoffs) computes itself from a
        segment output ``z`` (N, *cut_shape), e.g. cut noise's clipping, without its noise.
        White-box attackers invert the client segment followed by it (only for hooks that
        declare ``acts_on_queries``). The identity by default."""
        return z

    def backward(
        self, cut: str, grad: Tensor, *, activation: Tensor, labels: Tensor | None
    ) -> Tensor:
        """Transform the gradient before the receiving party sends it back across ``cut``.

        ``activation`` is what this party received; ``labels`` are given only if it holds them.
        """
        return grad

    def receive(
        self, cut: str, z: Tensor, *, sender: str, training: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Transform an activation ``z`` (N, *cut_shape) this party received from ``sender`` at
        ``cut`` before its segment reads it; returns ``(z', loss)``.

        ``z`` is the received leaf, so whatever ``z'`` computes from it is backpropagated into
        it: the gradient sent back is that of the transformed input (a trainable layer on the
        receiving side, e.g. MID's variational bottleneck). ``loss`` (a scalar, or None) joins
        this party's loss while training. Called in every phase, once per received activation.
        """
        return z, None

    def targets(self, labels: Tensor, *, ids: Tensor | None, n_classes: int) -> Tensor:
        """What this party's loss compares its logits (N, n_classes) with while training:
        class indices (N,) or class probabilities (N, n_classes). Called only at a party that
        holds ``labels`` (N,) of samples ``ids`` (N,) (label DP, CAE's soft fake labels)."""
        return labels

    def predict(self, logits: Tensor) -> Tensor:
        """What a party that holds labels predicts from its logits (N, classes) outside training
        (logits again: evaluation and inference take their argmax and softmax); CAE decodes its
        soft labels here."""
        return logits

    def penalty(self, cut: str, x: Tensor, z: Tensor) -> Tensor | None:
        """A loss term the sending party adds for its message ``z`` at ``cut`` (None: none).

        Called by a party only while training, only for a node it computes from its *own* raw
        inputs ``x`` (N, *input_shape) (its data view; never labels, never another party's
        data), with ``z`` (N, *cut_shape) the message as it is sent (after every hook's
        ``forward``, still attached to the sender's graph). The returned scalar joins the
        sender's loss and is backpropagated into the sender's segment with the cut gradient.
        """
        return None

    def on_train_end(self, result: Any) -> None:
        """Called with the :class:`~nopeek.training.trainer.TrainResult` after metrics.json is
        written (e.g. a malicious server writes its own report into ``result.run_dir``)."""

    def metrics(self) -> dict[str, Any]:
        """Entries for ``metrics.json`` (e.g. the privacy budget spent)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Whatever must survive a checkpoint for ``--resume`` to give identical results."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def _hook_parties(hook: CutHook, topology: Any) -> list[str]:
    """The parties a hook acts for, from its ``acts_at`` (None: every party, one instance)."""
    where = hook.acts_at
    if where == "data":
        return list(topology.data_parties)
    if where == "labels":
        return list(topology.label_parties)
    if where == "server":
        data = set(topology.data_parties)
        return list(dict.fromkeys(e.receiver for e in topology.edges() if e.sender in data))
    return list(topology.parties)


def bind_hooks(hooks: list[CutHook], topology: Any) -> dict[str, list[CutHook]]:
    """Each party's own hooks: a defense acts at the parties its ``acts_at`` names (data
    parties, label parties, or the server receiving the data parties' activations), each such
    party with its own instance (its own noise stream); a hook without ``acts_at`` is shared.

    Instance ``i`` of a hook gets ``party_index = i`` and draws its own noise stream (see
    :class:`TrainContext`), so two clients never draw the same noise.
    """
    out: dict[str, list[CutHook]] = {p: [] for p in topology.parties}
    for hook in hooks:
        if not hook.follows_relay and topology.strategy == "relay":
            from nopeek.errors import ConfigError

            raise ConfigError(
                f"{hook.name} cannot follow the client segment through a many-clients relay "
                "(each turn starts a fresh optimizer); use --topology splitfed or cut-noise "
                "instead"
            )
        senders = {e.sender for e in topology.edges() if e.sender in topology.data_parties}
        if hook.one_sender and len(senders) > 1:
            from nopeek.errors import ConfigError

            raise ConfigError(
                f"{hook.name} attacks one client's cut, but {topology.name} has "
                f"{len(senders)} clients sending; use a two-party topology (vanilla, u-shaped, "
                "multi-hop)"
            )
        parties = _hook_parties(hook, topology)
        shared = hook.acts_at is None
        for i, party in enumerate(parties):
            instance = hook if (shared or i == 0) else copy.deepcopy(hook)
            if not shared:
                instance.party_index = i
            out[party].append(instance)
    return out


def hook_metrics(runtime: Any) -> dict[str, Any]:
    """Every hook instance's metrics; with several instances of one hook (one per client) each
    key also appears as ``<key>_<party>``, and the plain key holds the first party's value.
    ``applied_<party>`` lists the hooks that party itself ran (in a distributed run each party
    reports its own; the label party only gathers them)."""
    out: dict[str, Any] = {}
    owners: dict[int, list[str]] = {}
    for name, party in runtime.parties.items():
        for hook in party.hooks:
            owners.setdefault(id(hook), []).append(name)
    counted: dict[str, int] = {}
    for hook in runtime.hooks:
        counted[hook.name] = counted.get(hook.name, 0) + 1
    for name, party in runtime.parties.items():  # what each party itself applied, by name
        out[f"applied_{name}"] = [getattr(h, "name", type(h).__name__) for h in party.hooks]
    for hook in runtime.hooks:
        values = hook.metrics()
        for key, value in values.items():
            out.setdefault(key, value)
            if counted[hook.name] > 1:
                out[f"{key}_{owners[id(hook)][0]}"] = value
    return out
