"""Utility and leakage of a trained split model: accuracy, AUC, dCor at the cut, bytes sent."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from nopeek.channel import FORWARD, WireLog
from nopeek.data import Split
from nopeek.distance import distance_correlation, u_distance_correlation_sqr
from nopeek.engine import SplitEngine
from nopeek.topology import Topology


def _set_mode(engine: SplitEngine, train: bool) -> None:
    for node in engine.topology.nodes:
        node.module.train(train)


@torch.no_grad()
def predict(engine: SplitEngine, split: Split, batch_size: int, device, *, phase: str = "eval"):
    """Logits ``(N, classes)`` of the first objective's node for ``split``, in order."""
    _set_mode(engine, False)
    engine.channel.log.at(phase=phase, step=0)
    head = engine.topology.objectives[0].node
    chunks = []
    for step, start in enumerate(range(0, len(split), batch_size)):
        engine.channel.log.at(step=step)
        sl = slice(start, start + batch_size)
        batch = {"x": split.x[sl], "y": split.y[sl], "ids": split.ids[sl]}
        batch = {k: v.to(device) for k, v in batch.items()}
        chunks.append(engine.step(batch, train=False).outputs[head].float().cpu())
    _set_mode(engine, True)
    return torch.cat(chunks)


def evaluate(engine: SplitEngine, split: Split, batch_size: int, device) -> dict[str, float]:
    """Accuracy and mean cross-entropy on ``split``; ROC-AUC too when the task is binary."""
    logits = predict(engine, split, batch_size, device)
    out = {
        "accuracy": float((logits.argmax(1) == split.y).float().mean()),
        "loss": float(torch.nn.functional.cross_entropy(logits, split.y)),
    }
    if logits.shape[1] == 2 and len(torch.unique(split.y)) == 2:
        out["auc"] = float(roc_auc_score(split.y.numpy(), logits.softmax(1)[:, 1].numpy()))
    return out


def leakage_sample(split: Split, *, n: int, seed: int) -> Split:
    """A fixed, seeded sample of up to ``n`` examples (in id order) to measure leakage on."""
    rng = np.random.default_rng(seed + 1_000_003)
    k = min(n, len(split))
    idx = np.sort(rng.choice(len(split), size=k, replace=False))
    return split.subset(torch.as_tensor(idx))


def measure_dcor(engine: SplitEngine, sample: Split, batch_size: int, device) -> dict:
    """dCor between raw inputs and what the data party sends at its first cut.

    Runs ``sample`` through the model in the ``inference`` phase (the messages are captured on
    the wire log, where attacks find them) and compares in float64 on the whole sample.
    """
    topo = engine.topology
    cut = next(n.cut for n in topo.nodes if n.party == topo.data_party and n.cut in topo.cuts())
    before = len(engine.channel.log.captures)
    predict(engine, sample, batch_size, device, phase="inference")
    caps = [
        c
        for c in engine.channel.log.captures[before:]
        if c.record.cut == cut and c.record.direction == FORWARD
    ]
    z = torch.cat([c.tensor for c in caps]).double()
    x = sample.x.double()
    return {
        "dcor_test": float(distance_correlation(x, z)),
        "dcor_test_unbiased": float(u_distance_correlation_sqr(x, z)),
        "dcor_sample_size": len(sample),
        "dcor_cut": cut,
    }


def _senders(topology: Topology) -> dict[str, tuple[str, str]]:
    """cut name -> (party sending activations, party receiving them)."""
    out = {}
    for node in topology.nodes:
        for src in node.inputs:
            if src in {n.name for n in topology.nodes} and topology.crosses(src, node.name):
                out[topology.node(src).cut or src] = (topology.node(src).party, node.party)
    return out


def wire_bytes(wire: WireLog, topology: Topology, *, epochs: int) -> dict[str, float]:
    """Bytes the data party sent and received per training epoch (measured on the wire log)."""
    ends = _senders(topology)
    sent = received = 0
    for r in wire.records:
        if r.phase != "train":
            continue
        src, dst = ends[r.cut]
        sender, receiver = (src, dst) if r.direction == FORWARD else (dst, src)
        if sender == topology.data_party:
            sent += r.nbytes
        if receiver == topology.data_party:
            received += r.nbytes
    return {
        "bytes_client_to_server": sent / epochs,
        "bytes_server_to_client": received / epochs,
    }
