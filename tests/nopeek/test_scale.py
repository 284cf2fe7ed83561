"""Many clients at scale: the same numbers as before, and memory bounded by the live clients.

``scale_golden.json`` holds what four K = 3 runs gave at commit f4604e8, before the relay's
hand-offs copied into kept segments and SplitFed averaged streaming (digits, 200 training
samples, batch 32, lr 5e-3, 2 epochs, seed 0): the epoch losses (float hex), test accuracies,
the SHA-256 of every party's final segments and the wire bytes. The runs must give them to the
last bit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nopeek import load_dataset
from nopeek.config import TrainConfig
from nopeek.data.bundled import AUGMENT_COPIES, shifted_copies
from nopeek.runtime import flatten_state, weighted_mean
from nopeek.runtime.channel import WEIGHTS, InProcessChannel
from nopeek.runtime.inprocess import WeightedSum
from nopeek.runtime.segments import FlatSegment
from nopeek.training.assemble import assemble

GOLDEN = json.loads((Path(__file__).parent / "scale_golden.json").read_text())
SETTINGS = {
    "relay-peer": {"topology": "many-clients", "relay": "peer"},
    "relay-server": {"topology": "many-clients", "relay": "server"},
    "splitfed-v1": {"topology": "splitfed", "splitfed": "v1"},
    "splitfed-v2": {"topology": "splitfed", "splitfed": "v2"},
}


def _config(name: str, **kw: object) -> TrainConfig:
    base = {"dataset": "digits", "clients": 3, "epochs": 2, "batch_size": 32, "max_train": 200}
    base |= {"device": "cpu", "seed": 0, "lr": 5e-3, "record_samples": 0, "dcor_samples": 32}
    return TrainConfig(**(base | SETTINGS[name] | kw)).resolved()


def _fingerprint(runner, metrics) -> dict:
    h = hashlib.sha256()
    for pname, party in runner.parties.items():
        for node, module in party.segments.items():
            if module is None:
                continue
            for key, t in module.state_dict().items():
                h.update(f"{pname}/{node}/{key}".encode())
                h.update(t.detach().contiguous().numpy().tobytes())
    return {
        "train_loss_per_epoch": [float(x).hex() for x in metrics["train_loss_per_epoch"]],
        "test_accuracy_per_epoch": metrics["test_accuracy_per_epoch"],
        "weights_sha256": h.hexdigest(),
        "wire_bytes": sum(r.nbytes for r in runner.wire.records),
        "held": {p: party.held for p, party in runner.parties.items()},
    }


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_k3_runs_give_the_numbers_of_before(name: str) -> None:
    torch.set_num_threads(1)
    runner = assemble(_config(name), device="cpu")
    result = runner.run(None)
    assert _fingerprint(runner, result.metrics) == GOLDEN[name]


def _client_bytes(runner, clients: list[str]) -> int:
    """Bytes of storage behind the client segments' state tensors, over all clients."""
    storages = {}
    for c in clients:
        module = runner.parties[c].segments[c] or runner.parties[c]._spares.take_if_kept(c)
        for t in module.state_dict().values() if module is not None else ():
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(storages.values())


def test_a_relay_keeps_one_client_segment_live() -> None:
    runner = assemble(_config("relay-peer", clients=6, epochs=1), device="cpu")
    clients = runner.strategy.clients
    one = sum(p.numel() * 4 for p in runner.topology.node("client0").module.state_dict().values())
    live, stored = [], []
    for step in runner.strategy.epoch(runner.runtime, 32, 0):
        runner.runtime.step(step.batch, train=True, nodes=step.nodes)
        live.append(sum(runner.parties[c].segments[c] is not None for c in clients))
        stored.append(_client_bytes(runner, clients))
    assert max(live) == 1 and min(live) == 1
    assert max(stored) == one  # the clients that gave the segment up keep no memory of it


def test_a_flat_segment_computes_what_the_module_did() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    x = torch.rand(5, 1, 8, 8)
    before, state = module(x), flatten_state(module)
    seg = FlatSegment.adopt(module)
    assert seg is not None and seg.intact()
    assert torch.equal(module(x), before) and torch.equal(seg.export(), state)
    seg.free()
    assert seg.flat.untyped_storage().nbytes() == 0
    seg.load(state)
    assert torch.equal(module(x), before)
    module.to(torch.float64).to(torch.float32)  # moved out of the buffer: still correct
    seg.load(state * 2)
    assert not seg.intact() and torch.equal(flatten_state(module), state * 2)


def test_a_flat_segment_refuses_what_it_cannot_hold() -> None:
    assert FlatSegment.adopt(nn.BatchNorm1d(3)) is None  # num_batches_tracked is int64
    tied = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    tied[1].weight = tied[0].weight
    assert FlatSegment.adopt(tied) is None


def test_the_streaming_mean_is_numpys_weighted_average() -> None:
    rng = np.random.default_rng(0)
    flats = {f"c{k}": torch.as_tensor(rng.normal(size=50), dtype=torch.float32) for k in range(7)}
    weights = {k: float(rng.integers(1, 20)) for k in flats}
    ref = np.average(np.stack([f.numpy() for f in flats.values()]), axis=0,
                     weights=list(weights.values()))  # fmt: skip
    acc = WeightedSum(weights)
    for k, f in flats.items():
        acc.add(k, f)
    assert np.allclose(acc.mean().numpy(), ref, atol=1e-6)
    assert torch.equal(acc.mean(), weighted_mean(flats, weights))


def test_splitfed_averaging_holds_one_weights_message_at_a_time() -> None:
    runner = assemble(_config("splitfed-v2", clients=5, epochs=1), device="cpu")
    channel = runner.runtime.channel
    assert isinstance(channel, InProcessChannel)
    most, deliver = [0], channel._deliver

    def counting(msg):
        deliver(msg)
        if msg.kind == WEIGHTS:
            most[0] = max(most[0], channel.pending())

    channel._deliver = counting  # type: ignore[method-assign]
    sizes = {c: 1.0 for c in runner.strategy.clients}
    runner.runtime.fedavg({c: c for c in sizes}, "fed", sizes)
    assert most[0] == 1


def test_shifted_copies_are_the_images_moved_by_one_pixel_at_most() -> None:
    x = torch.rand(6, 1, 5, 5)
    out = shifted_copies(x, 3, seed=0)
    assert out.shape == (18, 1, 5, 5)
    for i, img in enumerate(out):
        src = x[i % 6, 0]
        matches = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                ref = torch.zeros(5, 5)
                for r in range(5):
                    for c in range(5):
                        if 0 <= r - dy < 5 and 0 <= c - dx < 5:
                            ref[r, c] = src[r - dy, c - dx]
                matches.append(torch.equal(img[0], ref))
        assert sum(matches) == 1
    assert torch.equal(shifted_copies(x, 3, seed=0), out)
    assert not torch.equal(shifted_copies(x, 3, seed=1), out)


def test_digits_x10_is_digits_with_ten_times_the_training_images() -> None:
    small, big = load_dataset("digits", seed=0), load_dataset("digits-x10", seed=0)
    n = len(small.train)
    assert len(big.train) == (1 + AUGMENT_COPIES) * n
    assert torch.equal(big.train.x[:n], small.train.x) and torch.equal(big.test.x, small.test.x)
    assert torch.equal(big.train.y, small.train.y.repeat(1 + AUGMENT_COPIES))
    all_ids = torch.cat([big.train.ids, big.test.ids, big.aux.ids])
    assert all_ids.unique().numel() == all_ids.numel()
