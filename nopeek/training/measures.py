"""Utility and leakage of a trained split model: accuracy, AUC, dCor at the cut, bytes sent.

Predictions run through the same runtime and channel as training (phase ``eval`` or
``inference``), so every evaluation message is on the wire log too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor

from nopeek.data.party import RunData, RunSplit
from nopeek.distance import distance_correlation, u_distance_correlation_sqr
from nopeek.runtime import InProcessRuntime
from nopeek.runtime.channel import ACTIVATION, WEIGHTS, WireLog
from nopeek.seeding import numpy_rng
from nopeek.topology import DATA_PREFIX, Topology

if TYPE_CHECKING:
    from nopeek.runtime.plans import Strategy


@torch.no_grad()
def predict_all(
    runtime: InProcessRuntime,
    split: RunSplit,
    batch_size: int,
    device: torch.device,
    *,
    phase: str = "eval",
    nodes: Sequence[str] | None = None,
) -> dict[str, Tensor]:
    """Logits of every objective's node for ``split``, in order: ``{objective: (N, classes)}``."""
    runtime.train_mode(False)
    runtime.channel.log.at(phase=phase, step=0)
    plan = list(nodes) if nodes is not None else None
    active = set(plan) if plan is not None else {n.name for n in runtime.topology.nodes}
    local = {n.name for n in runtime.topology.nodes if n.party in runtime.parties}
    objectives = [o for o in runtime.topology.objectives if o.node in active and o.node in local]
    chunks: dict[str, list[Tensor]] = {o.name: [] for o in objectives}
    for step, start in enumerate(range(0, len(split), batch_size)):
        runtime.channel.log.at(step=step)
        batch = split.batch(slice(start, start + batch_size))
        batch = {k: v.to(device) for k, v in batch.items()}
        outputs = runtime.step(batch, train=False, nodes=plan).outputs
        for o in objectives:
            chunks[o.name].append(outputs[o.node].float().cpu())
    runtime.train_mode(True)
    return {name: torch.cat(parts) for name, parts in chunks.items()}


def predict(
    runtime: InProcessRuntime, split: RunSplit, batch_size: int, device: torch.device, **kw: Any
) -> Tensor | None:
    """Logits ``(N, classes)`` of the first objective's node for ``split``, in order (None in a
    process that does not run that node: a distributed party without the labels)."""
    return next(iter(predict_all(runtime, split, batch_size, device, **kw).values()), None)


def task_labels(topology: Topology, key: str, y: Tensor) -> Tensor:
    """The labels (N,) a task's objective compares with: ``y`` itself, or the labels the
    topology derives from it under ``key`` (multi-task's parity)."""
    if key in topology.derived:
        return topology.derived[key][1](y)
    return y


def _scores(logits: Tensor, y: Tensor) -> dict[str, float]:
    out = {
        "accuracy": float((logits.argmax(1) == y).float().mean()),
        "loss": float(torch.nn.functional.cross_entropy(logits, y)),
    }
    if logits.shape[1] == 2 and len(torch.unique(y)) == 2:
        out["auc"] = float(roc_auc_score(y.numpy(), logits.softmax(1)[:, 1].numpy()))
    return out


def evaluate(
    runtime: InProcessRuntime,
    split: RunSplit,
    batch_size: int,
    device: torch.device,
    *,
    nodes: Sequence[str] | None = None,
) -> dict[str, float]:
    """Accuracy and mean cross-entropy (ROC-AUC too when binary) of the first objective; with
    several tasks also ``accuracy_<task>`` and ``loss_<task>`` for each."""
    logits = predict_all(runtime, split, batch_size, device, nodes=nodes)
    by_name = {o.name: o for o in runtime.topology.objectives}
    out: dict[str, float] = {}
    for i, (name, z) in enumerate(logits.items()):
        scores = _scores(z, task_labels(runtime.topology, by_name[name].labels, split.y))
        if i == 0:
            out |= scores
        if runtime.topology.name == "multi-task":
            out |= {f"{k}_{name}": v for k, v in scores.items()}
    return out


def leakage_sample(split: RunSplit, *, n: int, seed: int) -> RunSplit:
    """A fixed, seeded sample of up to ``n`` examples (in id order) to measure leakage on."""
    rng = numpy_rng(seed, "leakage-sample")
    k = min(n, len(split))
    idx = np.sort(rng.choice(len(split), size=k, replace=False))
    return split.subset(torch.as_tensor(idx))


def _raw_key(topology: Topology, node: str) -> str:
    keys = [i[len(DATA_PREFIX) :] for i in topology.node(node).inputs if i.startswith(DATA_PREFIX)]
    return keys[0]


def measure_dcor(
    runtime: InProcessRuntime,
    sample: RunSplit,
    batch_size: int,
    device: torch.device,
    *,
    nodes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """dCor between each data party's raw inputs and what it sends at its cut.

    Runs ``sample`` through the model in the ``inference`` phase (the messages are captured on
    the wire log, where attacks find them) and compares in float64 on the whole sample. The
    first sender's values are ``dcor_test``/``dcor_test_unbiased``; with several data parties
    (vertical) each also gets ``dcor_test_<party>`` against its own feature slice.
    """
    topo = runtime.topology
    active = set(nodes) if nodes is not None else {n.name for n in topo.nodes}
    senders = [e for e in topo.edges() if e.sender in topo.data_parties and e.src in active]
    senders = list({(e.src, e.sender): e for e in senders}.values())
    several = len(senders) > 1
    before = len(runtime.channel.log.captures)
    predict(runtime, sample, batch_size, device, phase="inference", nodes=nodes)
    caps = runtime.channel.log.captures[before:]
    views = topo.views(sample.batch(slice(None)), list(runtime.parties))
    out: dict[str, Any] = {}
    for i, edge in enumerate(senders):
        if edge.sender not in runtime.parties:  # another process measures its own cut
            continue
        mine = [
            c
            for c in caps
            if c.record.cut == edge.cut
            and c.record.sender == edge.sender
            and c.record.kind == ACTIVATION
            and c.record.receiver == edge.receiver
        ]
        z = torch.cat([c.tensor for c in mine]).double()
        x = views[edge.sender][_raw_key(topo, edge.src)].double()
        d, u = float(distance_correlation(x, z)), float(u_distance_correlation_sqr(x, z))
        if i == 0:
            out |= {"dcor_test": d, "dcor_test_unbiased": u, "dcor_cut": edge.cut}
        if several:
            out |= {f"dcor_test_{edge.sender}": d, f"dcor_test_unbiased_{edge.sender}": u}
    out["dcor_sample_size"] = len(sample)
    return out


def wire_bytes(wire: WireLog, topology: Topology, *, epochs: int) -> dict[str, float]:
    """Bytes the data parties sent and received per training epoch (activations and gradients,
    measured on the wire log)."""
    data = set(topology.data_parties)
    sent = received = 0
    for r in wire.records:
        if r.phase != "train" or r.kind == WEIGHTS:
            continue
        sent += r.nbytes if r.sender in data else 0
        received += r.nbytes if r.receiver in data else 0
    return {
        "bytes_client_to_server": sent / epochs,
        "bytes_server_to_client": received / epochs,
    }


def party_costs(wire: WireLog, topology: Topology, *, epochs: int) -> dict[str, float]:
    """Per party and training epoch: ``bytes_sent_<p>``, ``bytes_received_<p>`` (every message
    kind) and ``weight_bytes_<p>`` (weights it sent: relay hand-offs, federated averaging)."""
    out: dict[str, float] = {}
    for p in topology.parties:
        out |= {f"bytes_sent_{p}": 0.0, f"bytes_received_{p}": 0.0, f"weight_bytes_{p}": 0.0}
    for r in wire.records:
        if r.phase != "train":
            continue
        out[f"bytes_sent_{r.sender}"] += r.nbytes / epochs
        out[f"bytes_received_{r.receiver}"] += r.nbytes / epochs
        if r.kind == WEIGHTS:
            out[f"weight_bytes_{r.sender}"] += r.nbytes / epochs
    return out


def client_accuracies(
    runtime: InProcessRuntime,
    strategy: Strategy,
    dataset: RunData,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """Many clients: ``test_accuracy_<client>``, the final model's test accuracy under each
    client's own label distribution (per-class test accuracy weighted by the client's shard);
    with IID shards these agree, with ``--non-iid`` they show who the model serves."""
    if runtime.topology.strategy == "single":
        return {}
    logits = predict(runtime, dataset.test, batch_size, device, nodes=strategy.eval_nodes())
    if logits is None:
        return {}
    y = dataset.test.y
    hit = (logits.argmax(1) == y).double()
    per_class = torch.stack(
        [
            hit[y == c].mean() if bool((y == c).any()) else hit.new_tensor(0.0)
            for c in range(dataset.n_classes)
        ]
    )
    out = {}
    for client, shard in strategy.shards.items():
        share = torch.bincount(shard.y, minlength=dataset.n_classes).double()
        out[f"test_accuracy_{client}"] = float((per_class * share).sum() / share.sum())
    return out


__all__ = [
    "client_accuracies",
    "evaluate",
    "leakage_sample",
    "measure_dcor",
    "party_costs",
    "predict",
    "predict_all",
    "wire_bytes",
]


def flops_per_epoch(
    per_sample: dict[tuple[str, ...], dict[str, float]],
    topology: Topology,
    shard_sizes: dict[str, int],
    n_train: int,
) -> dict[str, float]:
    """``flops_<party>``: FLOPs (forward + backward) per training epoch.

    ``per_sample``: step plan (its node names) -> party -> FLOPs per sample of that plan, as
    counted on one step; ``shard_sizes``: client -> samples it trains on per epoch (local
    passes included). A plan that runs a client's nodes counts that client's samples, any other
    the whole training split (``n_train``).

    >>> from nopeek.models import build_model
    >>> from nopeek.topology import vanilla
    >>> topology = vanilla(build_model("mlp", input_shape=(4,), n_classes=2), ["fc1"])
    >>> flops_per_epoch({("client", "server"): {"client": 10.0, "server": 2.0}}, topology, {}, 5)
    {'flops_client': 50.0, 'flops_server': 10.0}
    """
    out: dict[str, float] = {}
    for plan, per_party in per_sample.items():
        in_plan = [topology.node(n).party for n in plan]
        client = next((p for p in in_plan if p in shard_sizes), None)
        n = shard_sizes[client] if client is not None else n_train
        for party, flops in per_party.items():
            out[f"flops_{party}"] = out.get(f"flops_{party}", 0.0) + flops * n
    return out
