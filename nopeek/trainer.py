"""The split trainer: epochs, batches, one optimizer per party, checkpoints, evaluation.

``train`` validates everything before it creates the run directory, then runs the topology's
parties through :class:`~nopeek.engine.SplitEngine` (every cut through a channel), checkpoints
atomically after each epoch (``--resume`` continues to bit-identical final weights), evaluates
on the test split and measures leakage of the cut activations (distance correlation).
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from nopeek import _checkpoint
from nopeek._io import atomic_write_json
from nopeek.channel import InProcessChannel, WireLog
from nopeek.config import TrainConfig
from nopeek.data import Dataset, Split, check_finite
from nopeek.engine import SplitEngine
from nopeek.errors import CheckpointError, ConfigError
from nopeek.evaluation import evaluate, leakage_sample, measure_dcor, wire_bytes
from nopeek.hooks import CutHook, PartyState, TrainContext
from nopeek.models import build_model
from nopeek.observe import Observations, capture_policy
from nopeek.regularizers import nopeek_penalty
from nopeek.shapes import check_shapes
from nopeek.topology import TOPOLOGIES, Topology

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """The outcome of a run: flat metrics (as in metrics.json) and the live objects."""

    config: TrainConfig
    metrics: dict[str, Any]
    topology: Topology
    dataset: Dataset
    observations: Observations
    wire: WireLog
    run_dir: Path | None = None
    model: nn.Module | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return dict(self.metrics)


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked but no CUDA device is available; use --device cpu")
    return torch.device(name)


def _seeded_model(config: TrainConfig, dataset: Dataset) -> nn.Sequential:
    """Build the model with weights fixed by the seed, without touching global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_model(
            config.model, input_shape=dataset.input_shape, n_classes=dataset.n_classes
        )


def _prepare_out(out: Path | None, *, resume: bool, overwrite: bool) -> None:
    if out is None:
        return
    if resume:
        if not (out / _checkpoint.FILENAME).exists():
            raise CheckpointError(f"no checkpoint in {out} to resume; train without --resume first")
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(
            f"run directory {out} exists; pass --overwrite to replace it or --resume to continue"
        )


def _parties(topology: Topology, lr: float) -> dict[str, PartyState]:
    out = {}
    for party in topology.parties:
        modules = topology.modules_of(party)
        params = list(dict.fromkeys(p for m in modules for p in m.parameters()))
        opt = torch.optim.Adam(params, lr=lr) if params else None
        out[party] = PartyState(party, modules, opt)
    return out


def _penalties(topology: Topology, alpha: float) -> dict:
    """NoPeek on every node of the data party whose output crosses to another party."""
    if alpha == 0:
        return {}
    senders = {
        src
        for node in topology.nodes
        for src in node.inputs
        if src in {n.name for n in topology.nodes} and topology.crosses(src, node.name)
    }
    return {
        name: (lambda view, out: nopeek_penalty(view["x"], out, alpha=alpha))
        for name in senders
        if topology.node(name).party == topology.data_party
    }


def _batches(split: Split, batch_size: int, *, seed: int, epoch: int):
    """Shuffled batches; the order depends only on (seed, epoch), so resume replays it exactly."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(split), generator=gen)
    for start in range(0, len(split), batch_size):
        idx = order[start : start + batch_size]
        yield {"x": split.x[idx], "y": split.y[idx], "ids": split.ids[idx]}


def train(
    config: TrainConfig,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    hooks: Sequence[CutHook] = (),
    model: nn.Sequential | None = None,
    dataset: Dataset | None = None,
) -> TrainResult:
    """Train a split model as ``config`` says; write the run to ``out`` (if given).

    ``hooks`` are defenses or malicious parties (see :mod:`nopeek.hooks`); ``model`` and
    ``dataset`` override the registry lookups (for custom models in the Python API).
    """
    config.validate()
    config = config.resolved() if model is None else config
    out = Path(out) if out is not None else None
    _prepare_out(out, resume=resume, overwrite=overwrite)
    device = pick_device(config.device)
    if dataset is None:
        dataset = config.load_data()
    for name in ("train", "test"):
        check_finite(getattr(dataset, name).x, what=f"{dataset.name} {name} inputs")
    model = model if model is not None else _seeded_model(config, dataset)
    topology = TOPOLOGIES.get(config.topology)(model, config.cuts)
    check_shapes(topology, dataset.train.x[:2])
    state = _checkpoint.load(out, config) if resume else None
    if state is not None and state["epoch"] >= config.epochs:
        raise ConfigError(
            f"run {out} already finished its {config.epochs} epochs; nothing to resume "
            "(train anew with --overwrite)"
        )
    if out is not None and not resume and out.exists():
        shutil.rmtree(out)
    model.to(device)
    runner = _Runner(config, dataset, topology, list(hooks), device, quiet=quiet)
    return runner.run(out, state, model)


class _Runner:
    """Holds the live state of one training run."""

    def __init__(self, config, dataset, topology, hooks, device, *, quiet: bool) -> None:
        self.config, self.dataset, self.topology, self.hooks = config, dataset, topology, hooks
        self.device, self.quiet = device, quiet
        self.parties = _parties(topology, config.lr)
        ctx = TrainContext(
            n_train=len(dataset.train),
            batch_size=config.batch_size,
            epochs=config.epochs,
            seed=config.seed,
            delta=config.delta,
            parties=self.parties,
            data_party=topology.data_party,
            label_party=topology.owners["y"],
            device=device,
            extra={"n_classes": dataset.n_classes, "alpha": config.alpha, "hooks": list(hooks)},
        )
        for hook in hooks:
            hook.setup(ctx)
        self.wire = WireLog(
            capture=capture_policy(
                record_samples=config.record_samples,
                batch_size=config.batch_size,
                epochs=config.epochs,
            )
        )
        self.engine = SplitEngine(
            topology,
            InProcessChannel(self.wire),
            hooks=hooks,
            penalties=_penalties(topology, config.alpha),
        )
        self.history: dict[str, list[float]] = {"train_loss": [], "test_accuracy": []}
        self.train_seconds = 0.0

    def run(self, out: Path | None, state: dict | None, model: nn.Module) -> TrainResult:
        start_epoch = 0
        if state is not None:
            start_epoch = _checkpoint.restore(state, self)
        cfg = self.config
        if out is not None and state is None:
            atomic_write_json(out / "config.json", cfg.to_dict())
        steps_per_epoch = -(-len(self.dataset.train) // cfg.batch_size)
        bar = tqdm(
            total=(cfg.epochs - start_epoch) * steps_per_epoch,
            disable=self.quiet or not sys.stderr.isatty(),
            desc="train",
            unit="step",
        )
        for epoch in range(start_epoch, cfg.epochs):
            began = time.perf_counter()
            loss = self._epoch(epoch, bar)
            self.train_seconds += time.perf_counter() - began
            acc = evaluate(self.engine, self.dataset.test, cfg.batch_size, self.device)["accuracy"]
            self.history["train_loss"].append(loss)
            self.history["test_accuracy"].append(acc)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}", acc=f"{acc:.3f}")
            log.info("epoch %d: loss %.4f test accuracy %.4f", epoch + 1, loss, acc)
            if out is not None:
                _checkpoint.save(out, self, epoch + 1)
        bar.close()
        return self._finish(out, model)

    def _epoch(self, epoch: int, bar) -> float:
        for part in self.topology.nodes:
            part.module.train()
        total, count = 0.0, 0
        batches = _batches(
            self.dataset.train, self.config.batch_size, seed=self.config.seed, epoch=epoch
        )
        for step, batch in enumerate(batches):
            self.wire.at(phase="train", epoch=epoch, step=step)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            for party in self.parties.values():
                if party.optimizer is not None:
                    party.optimizer.zero_grad(set_to_none=True)
            result = self.engine.step(batch, train=True)
            for party in self.parties.values():
                if party.optimizer is not None:
                    party.optimizer.step()
            total += sum(result.losses.values()) * len(batch["y"])
            count += len(batch["y"])
            bar.update(1)
        return total / count

    def _finish(self, out: Path | None, model: nn.Module) -> TrainResult:
        cfg, ds = self.config, self.dataset
        test = evaluate(self.engine, ds.test, cfg.batch_size, self.device)
        sample = leakage_sample(ds.test, n=cfg.dcor_samples, seed=cfg.seed)
        self.wire.at(phase="inference", epoch=cfg.epochs, step=0)
        leak = measure_dcor(self.engine, sample, cfg.batch_size, self.device)
        metrics: dict[str, Any] = {
            "dataset": cfg.dataset,
            "model": cfg.model,
            "cut": cfg.cut,
            "topology": cfg.topology,
            "alpha": cfg.alpha,
            "seed": cfg.seed,
            "epochs": cfg.epochs,
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            **({"test_auc": test["auc"]} if "auc" in test else {}),
            **leak,
            **wire_bytes(self.wire, self.topology, epochs=cfg.epochs),
            "train_seconds": round(self.train_seconds, 3),
            "train_loss_per_epoch": self.history["train_loss"],
            "test_accuracy_per_epoch": self.history["test_accuracy"],
        }
        for hook in self.hooks:
            metrics.update(hook.metrics())
        observations = Observations.from_captures(self.wire.captures)
        if out is not None:
            observations.save(out / "observations.pt")
            _checkpoint.save(out, self, cfg.epochs, captures=False)
            atomic_write_json(out / "metrics.json", metrics)
        result = TrainResult(cfg, metrics, self.topology, ds, observations, self.wire, out, model)
        for hook in self.hooks:
            hook.on_train_end(result)
        return result
