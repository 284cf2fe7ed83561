"""The attacked edge of a finished run: rebuilt topology, who sends and receives, segments.

An attack observes one cut edge (:class:`~nopeek.topology.Edge`): the activations its sender
sent to its receiver, and the gradients that came back. ``--party`` picks the sender (a vertical
or many-clients run has one edge per client at the same cut), ``--cut`` the cut; by default a
reconstruction attacks the first data party's first cut, and a label attack the first edge
whose gradient receiver lacks the labels (U-shaped: the server at the second cut; vertical: a
passive client).

The run is rebuilt and its weights restored the one way every entry point uses
(:func:`nopeek.training.assemble.assemble` and :func:`~nopeek.training.assemble.restore`),
without its hooks: the attacker holds the trained segments as they are, with no defense set
up on them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from nopeek.config import SEED_MAX, TrainConfig
from nopeek.data import Dataset
from nopeek.errors import ConfigError, ThreatModelError
from nopeek.models import split
from nopeek.models.packing import Layout, Packed, packed
from nopeek.seeding import stream_seed
from nopeek.topology import DATA_PREFIX, Edge, Topology
from nopeek.training.assemble import assemble, build_run, restore
from nopeek.training.runner import Runner

if TYPE_CHECKING:
    from nopeek.attacks._folders import RunFolders


@dataclass
class Target:
    """A finished run rebuilt for attacking ``edge``.

    ``dataset`` is what the edge's sender holds: for a vertical client, its own feature slice
    of every sample (the reconstruction target); ``runner`` the run as assembled (no hooks, on
    the CPU); ``segments`` its segments by node, with the trained weights once
    :func:`load_weights` ran.
    """

    run_dir: Path
    config: TrainConfig
    dataset: Dataset
    topology: Topology
    model: nn.Sequential
    edge: Edge
    full: Dataset  # the whole data set (what a fresh model is built for)
    segments: dict[str, nn.Module | None] = field(default_factory=dict)
    # where each party's checkpoint is (a distributed run); None: all in run_dir
    folders: RunFolders | None = None
    runner: Runner | None = field(default=None, repr=False)

    @property
    def cut(self) -> str:
        return self.edge.cut

    @property
    def sender(self) -> str:  # sends activations across the cut, receives the gradients
        return self.edge.sender

    @property
    def receiver(self) -> str:  # receives the activations, sends the gradients back
        return self.edge.receiver


def _pick(topology: Topology, run_dir: Path, cut: str | None, party: str | None, label: bool):
    edges = list({(e.src, e.receiver): e for e in topology.edges()}.values())
    found = [
        e for e in edges if (cut is None or e.cut == cut) and (party is None or e.sender == party)
    ]
    if not found:
        pairs = ", ".join(f"{e.cut} ({e.sender} -> {e.receiver})" for e in edges)
        raise ConfigError(
            f"run {run_dir} has no cut {cut or 'any'!r} sent by {party or 'any party'}; its cut "
            f"edges are: {pairs} (pass --cut and --party)"
        )
    if label and party is None:
        labels = set(topology.label_parties)
        return next((e for e in found if e.sender not in labels), found[0])
    if party is None:
        data = set(topology.data_parties)
        return next((e for e in found if e.sender in data), found[0])
    return found[0]


def _raw_key(topology: Topology, src: str) -> str | None:
    """The data key the chain ending at ``src`` starts from (None if it reads no raw data)."""
    node = topology.node(src)
    for inp in node.inputs:
        if inp.startswith(DATA_PREFIX):
            return inp[len(DATA_PREFIX) :]
    ups = list(node.inputs)
    return _raw_key(topology, ups[0]) if len(ups) == 1 else None


def sender_view(dataset: Dataset, topology: Topology, src: str) -> Dataset:
    """``dataset`` as the sender of ``src``'s chain holds it (its own feature slice)."""
    key = _raw_key(topology, src)
    if key is None or key not in topology.derived:
        return dataset
    fn = topology.derived[key][1]
    splits = {
        s: replace(getattr(dataset, s), x=fn(getattr(dataset, s).x))
        for s in ("train", "test", "aux")
    }
    stats = {  # a tabular slice keeps its own columns' standardization (D,) -> (D_k,)
        k: fn(getattr(dataset, k))
        for k in ("feature_mean", "feature_std")
        if getattr(dataset, k) is not None
    }
    return replace(dataset, **splits, **stats, input_shape=tuple(splits["train"].x.shape[1:]))


def rebuild(
    run_dir: Path,
    config: TrainConfig,
    dataset: Dataset,
    *,
    cut: str | None,
    party: str | None,
    label: bool,
) -> Target:
    """The run assembled as in training (seeded topology, no hooks, on the CPU) and the
    attacked edge; the trained weights come with :func:`load_weights`."""
    runner = assemble(config, dataset, device=torch.device("cpu"))
    edge = _pick(runner.topology, run_dir, cut, party, label)
    view = sender_view(dataset, runner.topology, edge.src)
    return Target(
        run_dir, config, view, runner.topology, runner.model, edge, dataset, _segments(runner),
        runner=runner,
    )  # fmt: skip


def _segments(runner: Runner) -> dict[str, nn.Module | None]:
    """Every node's segment as its party holds it now (None: a relay client between turns)."""
    return {n: m for party in runner.parties.values() for n, m in party.segments.items()}


def load_weights(target: Target) -> None:
    """Restore the trained segments into ``target``'s runner
    (:func:`~nopeek.training.assemble.restore` with ``segments_only``: each party's, relay
    clients holding exactly what they held; a distributed run's each from its own folder) and
    set ``target.segments`` from it, in eval mode."""
    if target.runner is None:
        target.runner = assemble(target.config, target.full, device=torch.device("cpu"))
    folders = target.folders
    where = None
    if folders is not None:
        where = {p: folders.folder_of(p) for p in target.topology.parties}
    restore(target.run_dir, folders=where, segments_only=True, into=target.runner)
    target.segments = _segments(target.runner)
    for module in target.segments.values():
        if module is not None:
            module.eval()


def _held(target: Target, node: str) -> nn.Module:
    """The segment of ``node``; in a relay, a client between turns has none: the weights it
    would hold are the relayed ones (the last holder's)."""
    module = target.segments[node]
    if module is None and target.topology.strategy == "relay":
        module = next(
            m
            for n, m in target.segments.items()
            if m is not None and n in target.topology.holders("x")
        )
    if module is None:
        raise ThreatModelError(f"no weights for {node} in {target.run_dir}; retrain the run")
    return module


def client_segment(target: Target) -> nn.Module:
    """Raw inputs (the sender's view) -> what it sends at the cut, sharing the loaded weights.

    The chain of single-input nodes from the data to the edge's source (multi-hop: the client and
    the relays before the cut).
    """
    chain, node = [], target.topology.node(target.edge.src)
    while True:
        chain.append(_held(target, node.name))
        ups = [i for i in node.inputs if not i.startswith(DATA_PREFIX)]
        if not ups:
            break
        if len(ups) > 1:
            raise ThreatModelError(
                f"the segment before cut {target.cut} merges several inputs; attack a client's "
                "own cut instead (--party)"
            )
        node = target.topology.node(ups[0])
    return chain[0] if len(chain) == 1 else nn.Sequential(*reversed(chain))


def receiver_segment(target: Target) -> nn.Module:
    """The trained segment the attacked edge feeds, (N, *cut_shape) -> logits, frozen: the
    receiver's own model. Refused where that segment reads several inputs or does not end in
    the loss (U-shaped, vertical, an inner hop)."""
    node = target.topology.node(target.edge.dst)
    ends = {o.node for o in target.topology.objectives}
    if len(node.inputs) != 1 or node.name not in ends:
        raise ThreatModelError(
            f"the segment after cut {target.cut} ({target.receiver}'s) does not map that cut "
            "alone to the logits; this attack needs a vanilla run (or the last hop's cut)"
        )
    load_weights(target)
    return copy.deepcopy(_held(target, node.name)).eval().requires_grad_(False)


def fresh(target: Target, seed: int, part: int):
    """Freshly initialised segments before (``part`` 0) or after (1) the cut, from a seed
    derived from the attack's that never equals the training seed."""
    init = stream_seed(seed, "attack.fresh-segments", part)
    init = init + 1 if init == target.config.seed else init
    cfg = replace(target.config, seed=init % SEED_MAX)

    def build() -> nn.Module:
        model, topology = build_run(cfg, target.full)
        if target.topology.name in ("vanilla", "multi-hop", "u-shaped"):
            parts = split(model, [target.cut])
            layout = _layout_at(topology, target.cut)  # a cut a skip crosses travels packed
            if layout is not None:
                parts = [packed(parts[0], None, layout), packed(parts[1], layout, None)]
            return parts[part]
        other = replace(
            target, topology=topology, segments={n.name: n.module for n in topology.nodes}
        )
        if part == 0:
            return _fresh_client(other)
        dst = topology.node(target.edge.dst)
        if len(dst.inputs) != 1:
            raise ThreatModelError(
                f"the segment after cut {target.cut} reads several clients; this attack needs "
                "a single-input tail (U-shaped, or vertical with --label-party)"
            )
        return dst.module

    return build


def _layout_at(topology: Topology, cut: str) -> Layout | None:
    """How the messages at ``cut`` are packed, if several tensors cross it."""
    for node in topology.nodes:
        if node.cut == cut and isinstance(node.module, Packed) and node.module.gives:
            return node.module.gives
    return None


def _fresh_client(target: Target) -> nn.Module:
    node = target.edge.src
    module = target.segments[node]
    return module if module is not None else target.topology.factories[node]()
