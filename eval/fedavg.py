"""Federated averaging (McMahan et al. 2017), measured like a split-learning run.

The baseline that ``nopeek cost --measure`` compares split learning with. Each round:

1. the server sends the global model (its whole state as one flat float32 vector, a
   ``weights`` message) to each of the ``K`` clients;
2. each client loads it, trains the *whole* model for one local epoch on its own shard (a fresh
   Adam at the config's learning rate, the same batch order as a split-learning client's turn:
   :func:`nopeek.runtime.plans.batches`), and sends its model back;
3. the server replaces the global model by the mean of the clients' models weighted by shard
   size (:func:`nopeek.runtime.weighted_mean`) and evaluates it on the test split.

The clients' shards are those of the many-clients topology (:func:`nopeek.runtime.plans.
shard_indices`, same seed), and the initial model is the one ``nopeek train`` builds for the
same seed, so the two methods start from the same weights on the same shards. Every weight
message goes through an :class:`~nopeek.runtime.channel.InProcessChannel`, whose wire log counts its
bytes; every local training step runs under ``FlopCounterMode``. The clients are simulated one
after the other in this process with one working copy of the model, each loading only what it
was sent.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nopeek.config import TrainConfig
from nopeek.data import Dataset, Split
from nopeek.errors import ConfigError, TrainingError
from nopeek.models import build_model
from nopeek.runtime import flatten_state, load_flat_state, weighted_mean
from nopeek.runtime.channel import WEIGHTS, InProcessChannel, Message, WireLog
from nopeek.runtime.plans import batches, local_pass_epoch, shard_indices
from nopeek.seeding import seeded

log = logging.getLogger(__name__)

SERVER = "server"
CUT = "model"  # the weights messages carry the whole model: no cut


@dataclass
class FedAvgResult:
    """A FedAvg run: ``metrics`` shaped like a split run's metrics.json (``bytes_sent_<p>``,
    ``bytes_received_<p>``, ``weight_bytes_<p>``, ``flops_<p>`` per round), the wire log,
    the final global model."""

    metrics: dict
    wire: WireLog
    model: nn.Module = field(repr=False)


def _accuracy(model: nn.Module, split: Split, batch_size: int, device) -> float:
    model.eval()
    hits = 0
    with torch.no_grad():
        for start in range(0, len(split), batch_size):
            x = split.x[start : start + batch_size].to(device)
            y = split.y[start : start + batch_size].to(device)
            hits += int((model(x).argmax(1) == y).sum())
    return hits / len(split)


def _local_epoch(
    model, shard: Split, cfg: TrainConfig, rnd: int, k: int, device, local_epochs: int = 1
) -> tuple:
    """One client's local training in round ``rnd``: ``local_epochs`` passes over its shard
    (McMahan et al.'s E; each pass in the batch order :func:`~nopeek.runtime.plans.
    local_pass_epoch` gives it, as SplitFed's) with one fresh Adam. Returns (FLOPs counted,
    mean loss of the last pass)."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    flops = 0.0
    for e in range(local_epochs):
        order = local_pass_epoch(rnd, local_epochs, e)
        done, loss = _one_pass(model, opt, shard, cfg, order, k, device)
        flops += done
    return flops, loss


def _one_pass(model, opt, shard: Split, cfg: TrainConfig, epoch: int, k: int, device) -> tuple:
    flops, total = 0.0, 0.0
    for batch in batches(shard, cfg.batch_size, seed=cfg.seed, epoch=epoch, client=k):
        x, y = batch["x"].to(device), batch["y"].to(device)
        opt.zero_grad(set_to_none=True)
        with FlopCounterMode(display=False) as counter:
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
        opt.step()
        flops += float(counter.get_total_flops())
        total += loss.item() * len(y)
    return flops, total / len(shard)


def fedavg(
    config: TrainConfig,
    *,
    target: float | None = None,
    dataset: Dataset | None = None,
    local_epochs: int = 1,
) -> FedAvgResult:
    """Train ``config.model`` on ``config.dataset`` by FedAvg with ``config.clients`` clients for
    at most ``config.epochs`` rounds (``local_epochs`` passes over the own shard each), stopping
    after the first round whose test accuracy reaches ``target``. ``cut`` and ``topology`` of
    the config are not used.

    >>> cfg = TrainConfig(dataset="digits", clients=3, epochs=1, max_train=60, device="cpu")
    >>> res = fedavg(cfg)
    >>> res.metrics["weight_bytes_server"] == 3 * res.metrics["weight_bytes_client0"]
    True
    """
    from nopeek.training.trainer import pick_device

    config.validate()
    cfg = config.resolved()
    if target is not None and not 0.0 < target <= 1.0:
        raise ConfigError(f"--target must be an accuracy in (0, 1], got {target}")
    if local_epochs < 1:
        raise ConfigError(f"--local-epochs must be >= 1, got {local_epochs}")
    ds = dataset if dataset is not None else cfg.load_data()
    device = pick_device(cfg.device)
    with seeded(cfg.seed, "model.init"):  # the initial weights of `nopeek train`, same seed
        global_model = build_model(cfg.model, input_shape=ds.input_shape, n_classes=ds.n_classes)
    global_model.to(device)
    clients = [f"client{k}" for k in range(cfg.clients)]
    parts = shard_indices(ds.train.y, cfg.clients, non_iid=cfg.non_iid, seed=cfg.seed)
    run = _Run(cfg, global_model, {c: ds.train.subset(p) for c, p in zip(clients, parts)}, device)
    run.local_epochs = local_epochs
    accuracies, losses = [], []
    for rnd in range(cfg.epochs):
        losses.append(run.round(rnd))
        accuracies.append(_accuracy(global_model, ds.test, cfg.batch_size, device))
        log.info(
            "FedAvg round %d: loss %.4f test accuracy %.4f", rnd + 1, losses[-1], accuracies[-1]
        )
        if target is not None and accuracies[-1] >= target:
            break
    rounds = len(accuracies)
    metrics = {
        "dataset": cfg.dataset,
        "model": cfg.model,
        "method": "fedavg",
        "clients": cfg.clients,
        "parties": [*clients, SERVER],
        "seed": cfg.seed,
        "epochs": rounds,
        "local_epochs": local_epochs,
        "test_accuracy": accuracies[-1],
        "train_loss_per_epoch": losses,
        "test_accuracy_per_epoch": accuracies,
        **_party_bytes(run.wire, [*clients, SERVER], rounds),
        **{f"flops_{c}": f / rounds for c, f in run.flops.items()},
    }
    return FedAvgResult(metrics, run.wire, global_model)


class _Run:
    """The live state of a FedAvg run: the global model, one working copy that each client
    loads in turn, the shards, the channel and its wire log, the clients' FLOP counts."""

    def __init__(self, cfg: TrainConfig, global_model: nn.Module, shards: dict, device) -> None:
        self.cfg, self.global_model, self.shards, self.device = cfg, global_model, shards, device
        self.local = copy.deepcopy(global_model)
        self.sizes = {c: float(len(s)) for c, s in shards.items()}
        self.wire = WireLog()
        self.channel = InProcessChannel(self.wire)
        self.flops = dict.fromkeys(shards, 0.0)
        self.local_epochs = 1

    def round(self, rnd: int) -> float:
        """One round: broadcast, local epochs, weighted average. Returns the mean train loss."""
        self.wire.at(phase="train", epoch=rnd, step=0)
        flat = flatten_state(self.global_model)
        for c in self.shards:
            self.channel.post(Message(WEIGHTS, CUT, SERVER, c, rnd, flat))
        loss, total = 0.0, sum(self.sizes.values())
        for k, c in enumerate(self.shards):
            got = self.channel.recv(sender=SERVER, receiver=c, kind=WEIGHTS, cut=CUT, step=rnd)
            load_flat_state(self.local, got.tensor)
            done, client_loss = _local_epoch(
                self.local, self.shards[c], self.cfg, rnd, k, self.device, self.local_epochs
            )
            self.flops[c] += done
            loss += client_loss * self.sizes[c] / total
            self.channel.post(Message(WEIGHTS, CUT, c, SERVER, rnd, flatten_state(self.local)))
        if not math.isfinite(loss):
            raise TrainingError(
                f"FedAvg diverged in round {rnd + 1} (loss {loss}); lower --lr "
                f"(now {self.cfg.lr:g}) and train again"
            )
        recv = self.channel.recv
        got = {
            c: recv(sender=c, receiver=SERVER, kind=WEIGHTS, cut=CUT, step=rnd) for c in self.shards
        }
        load_flat_state(
            self.global_model, weighted_mean({c: m.tensor for c, m in got.items()}, self.sizes)
        )
        return loss


def _party_bytes(wire: WireLog, parties: list[str], rounds: int) -> dict[str, float]:
    """Per party and round: bytes sent, received, and of weights sent (here: all of them)."""
    out = {}
    for p in parties:
        out |= {f"bytes_sent_{p}": 0.0, f"bytes_received_{p}": 0.0, f"weight_bytes_{p}": 0.0}
    for r in wire.records:
        out[f"bytes_sent_{r.sender}"] += r.nbytes / rounds
        out[f"bytes_received_{r.receiver}"] += r.nbytes / rounds
        if r.kind == WEIGHTS:
            out[f"weight_bytes_{r.sender}"] += r.nbytes / rounds
    return out
