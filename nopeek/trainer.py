"""The split trainer: epochs, batches, one optimizer per party, checkpoints, evaluation.

``train`` validates everything before it creates the run directory, then runs the topology's
parties through :class:`~nopeek.engine.SplitEngine` (every cut through a channel), checkpoints
atomically after each epoch (``--resume`` continues to bit-identical final weights), evaluates
on the test split and measures leakage of the cut activations (distance correlation).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from nopeek import _checkpoint
from nopeek._io import atomic_write_json
from nopeek.channel import InProcessChannel, WireLog
from nopeek.config import TrainConfig
from nopeek.data import Dataset, Split, check_finite
from nopeek.errors import CheckpointError, ConfigError, DataError, TrainingError
from nopeek.evaluation import (
    client_accuracies,
    evaluate,
    leakage_sample,
    measure_dcor,
    party_costs,
    wire_bytes,
)
from nopeek.hooks import CutHook, TrainContext, bind_hooks, hook_metrics
from nopeek.models import MODELS, build_model
from nopeek.observe import Observations, capture_policy
from nopeek.plugins import build_hooks
from nopeek.regularizers import nopeek_penalty
from nopeek.rundir import MARKER, RunDir
from nopeek.runtime import InProcessRuntime, _gather
from nopeek.runtime.launch import PartyLaunch, common_epoch, make_channel
from nopeek.seeding import derive_seed
from nopeek.shapes import check_shapes
from nopeek.strategies import STRATEGIES, first_nodes
from nopeek.topology import DATA_PREFIX, TOPOLOGIES, Topology
from nopeek.topology.packing import pack_crossings

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


def _prepare_out(out: Path | None, *, resume: bool, overwrite: bool) -> RunDir | None:
    """Check ``out`` before anything runs; the :class:`~nopeek.rundir.RunDir` to write through.

    Refuses a file, a link or an unwritable folder, an existing run without ``--overwrite`` or
    ``--resume``, and (with ``--overwrite``) any folder that nopeek did not write.
    """
    if out is None:
        return None
    run_dir = RunDir(out, "run")
    run_dir.plan(resume=resume, overwrite=overwrite)
    if resume and not run_dir.checkpoint_path.exists():
        if out.is_dir() and any(p.name != MARKER for p in out.iterdir()):  # killed in epoch 1
            raise CheckpointError(
                f"no checkpoint in {out} to resume (the run stopped in its first epoch); "
                "train without --resume, with --overwrite to replace the partial run"
            )
        raise CheckpointError(f"no checkpoint in {out} to resume; train without --resume first")
    return run_dir


def _make_model(config: TrainConfig):
    """``(input_shape, n_classes, index) -> model``: fresh models for the other segments of a
    multi-party topology (client bottoms, task heads), each seeded from (seed, index)."""

    def make(input_shape: tuple[int, ...], n_classes: int, index: int) -> nn.Sequential:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(config.seed, "segment", index))
            return MODELS.get(config.model).build(tuple(input_shape), n_classes)

    return make


def build_topology(config: TrainConfig, dataset: Dataset, model: nn.Sequential) -> Topology:
    """The topology ``config`` names, over ``model`` (the seeded whole model) and ``dataset``."""
    ctx = config.build_context(dataset, _make_model(config))
    topology = TOPOLOGIES.get(config.topology)(model, config.cuts, ctx)
    return pack_crossings(topology, tuple(dataset.input_shape))  # cuts a skip crosses


def build_run(config: TrainConfig, dataset: Dataset) -> tuple[nn.Sequential, Topology]:
    """The seeded whole model and the topology over it, exactly as ``train`` builds them
    (what an attack rebuilds a finished run from). ``config`` must be resolved."""
    model = _seeded_model(config, dataset)
    return model, build_topology(config, dataset, model)


def _penalties(topology: Topology, alpha: float) -> dict:
    """NoPeek on every node of a data party whose output crosses to another party, against
    that party's own raw inputs (a vertical client: its own feature slice)."""
    if alpha == 0:
        return {}
    out = {}
    for name in dict.fromkeys(e.src for e in topology.edges()):
        node = topology.node(name)
        keys = [i[len(DATA_PREFIX) :] for i in node.inputs if i.startswith(DATA_PREFIX)]
        if node.party in topology.data_parties and keys:
            out[name] = _nopeek_on(keys[0], alpha)
    return out


def _nopeek_on(key: str, alpha: float):
    return lambda view, z: nopeek_penalty(view[key], z, alpha=alpha)


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
    launch: PartyLaunch | None = None,
) -> TrainResult:
    """Train a split model as ``config`` says; write the run to ``out`` (if given).

    The config's ``defenses`` and ``malicious_server`` become hooks through the installed
    plugins (:func:`nopeek.plugins.build_hooks`); ``hooks`` adds custom ones after them (see
    :mod:`nopeek.hooks`). ``model`` and ``dataset`` override the registry lookups (for custom
    models in the Python API).

    With ``launch`` (:class:`~nopeek.runtime.launch.PartyLaunch`) this process runs one party of
    a distributed run: it writes ``out/<party>/`` (its config, checkpoint, observations; the
    label party also ``metrics.json``), and gives the same numbers as the in-process run.
    """
    if launch is not None:
        return _train_party(config, out, launch, resume=resume, overwrite=overwrite, quiet=quiet)
    config.validate()
    config = config.resolved() if model is None else config
    hooks = [*build_hooks(config), *hooks]  # bad specs fail here, before anything is written
    out = Path(out) if out is not None else None
    run_dir = _prepare_out(out, resume=resume, overwrite=overwrite)
    device = pick_device(config.device)
    if dataset is None:
        dataset = config.load_data()
    for name in ("train", "test"):
        check_finite(getattr(dataset, name).x, what=f"{dataset.name} {name} inputs")
    model = model if model is not None else _seeded_model(config, dataset)
    topology = build_topology(config, dataset, model)
    check_shapes(topology, dataset.train.x[:2], nodes=first_nodes(topology))
    state = _checkpoint.load(out, config) if resume else None
    finished = run_dir is not None and run_dir.has(RunDir.METRICS)
    if state is not None and state["epoch"] >= config.epochs and finished:
        raise ConfigError(
            f"run {out} already finished its {config.epochs} epochs; nothing to resume "
            "(train anew with --overwrite)"
        )
    model.to(device)
    runner = _Runner(config, dataset, topology, hooks, device, quiet=quiet)
    return _run_in(run_dir, out, runner, state, model, resume=resume, overwrite=overwrite)


def _run_in(
    run_dir, out, runner, state, model, *, resume: bool, overwrite: bool, keep=None
) -> TrainResult:
    """Run ``runner`` writing through ``run_dir``: a fresh run in place (an interrupt keeps it for
    --resume, an error removes it); an overwrite in a staging sibling swapped in only at the end
    (see :mod:`nopeek.rundir`)."""
    if run_dir is None:
        return runner.run(None, state, model)
    with run_dir.writing(resume=resume, overwrite=overwrite, keep=keep) as where:
        result = runner.run(where, state, model)
    result.run_dir = out
    return result


def _has_checkpoint(path: Path) -> bool:
    """A distributed party keeps its folder when a peer fails: the others resume from it."""
    return (path / _checkpoint.FILENAME).is_file()


def _party_device(name: str) -> torch.device:
    """A party's device: ``cuda`` (then NCCL; the GPU of torchrun's LOCAL_RANK) or the CPU."""
    if name != "cuda":
        return torch.device("cpu")
    pick_device("cuda")  # one line if this host has no CUDA
    local = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def _train_party(config, out, launch, *, resume: bool, overwrite: bool, quiet: bool):
    """One party of a distributed run (see :func:`train`)."""
    config.validate()
    config = config.resolved()
    hooks = build_hooks(config)
    # NCCL only when asked for on every party (--device cuda); "auto" could differ per host
    device = _party_device(config.device)
    dataset = config.load_data()
    check_finite(dataset.train.x, what=f"{dataset.name} train inputs")
    model, topology = build_run(config, dataset)
    me = launch.party(topology)
    out = Path(out) / me if out is not None else None
    run_dir = _prepare_out(out, resume=resume, overwrite=overwrite)
    state = _checkpoint.load(out, config) if resume else None
    model.to(device)
    make = make_channel(
        topology, me, launch, x=dataset.train.x, max_batch=config.batch_size, device=device
    )
    launch.join(me, device, [p for p in topology.parties if p != me])
    runner = None
    try:
        if state is not None:
            state = _checkpoint.load_epoch(out, config, common_epoch(state["epoch"]))
        runner = _Runner(
            config, dataset, topology, hooks, device, quiet=quiet, local=[me], make_channel=make
        )
        return _run_in(
            run_dir, out, runner, state, model, resume=resume, overwrite=overwrite,
            keep=_has_checkpoint,
        )  # fmt: skip
    except Exception as exc:
        if runner is not None:
            runner.runtime.channel.broadcast_error(f"{me}: {str(exc).splitlines()[0][:300]}")
        raise
    finally:
        dist.destroy_process_group()


class _Runner:
    """Holds the live state of one training run: the runtime, the strategy, history."""

    def __init__(
        self,
        config,
        dataset,
        topology,
        hooks,
        device,
        *,
        quiet: bool,
        local: list[str] | None = None,
        make_channel=None,
    ) -> None:
        """``local``: the parties this process runs (default all: the in-process runtime);
        ``make_channel(wire_log)`` builds the channel (default in-process)."""
        self.config, self.dataset, self.topology = config, dataset, topology
        self.device, self.quiet = device, quiet
        self.wire = WireLog(
            capture=capture_policy(
                record_samples=config.record_samples,
                batch_size=config.batch_size,
                epochs=config.epochs,
            )
        )
        self.strategy = STRATEGIES.get(topology.strategy)(
            topology, dataset.train, non_iid=config.non_iid, seed=config.seed
        )
        bound = bind_hooks(hooks, topology)
        if local is not None:
            bound = {p: h for p, h in bound.items() if p in local}
        channel = make_channel(self.wire) if make_channel else InProcessChannel(self.wire)
        self.runtime = InProcessRuntime(
            topology,
            channel,
            hooks=bound,
            penalties=_penalties(topology, config.alpha),
            lr=config.lr,
            local=local,
        )
        self.label_party = topology.label_parties[0]
        self.distributed = local is not None and set(local) != set(topology.parties)
        self.parties = self.runtime.parties
        self.hooks = self.runtime.hooks
        self._setup_hooks(bound)
        self.history: dict[str, list[float]] = {"train_loss": [], "test_accuracy": []}
        self.train_seconds = 0.0
        self.flops_per_sample: dict[str, float] = {}

    def _setup_hooks(self, bound: dict[str, list[CutHook]]) -> None:
        cfg, sizes = self.config, self.strategy.shard_sizes()
        done: set[int] = set()
        for party, hooks in bound.items():
            ctx = TrainContext(
                n_train=sizes.get(party, len(self.dataset.train)),
                batch_size=cfg.batch_size,
                epochs=cfg.epochs,
                seed=cfg.seed,
                delta=cfg.delta,
                parties=self.parties,
                data_party=party
                if party in self.topology.data_parties
                else self.topology.data_party,
                label_party=self.topology.label_parties[0],
                device=self.device,
                extra={"n_classes": self.dataset.n_classes, "alpha": cfg.alpha, "hooks": hooks},
            )
            for hook in hooks:
                if id(hook) not in done:
                    hook.setup(ctx)
                    done.add(id(hook))

    def run(self, out: Path | None, state: dict | None, model: nn.Module) -> TrainResult:
        start_epoch = 0
        if state is not None:
            start_epoch = _checkpoint.restore(state, self)
        cfg = self.config
        if out is not None and state is None:
            atomic_write_json(out / "config.json", cfg.to_dict())
        steps_per_epoch = sum(-(-len(s) // cfg.batch_size) for s in self.strategy.shards.values())
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
            acc = self._evaluate(self.dataset.test).get("accuracy", math.nan)
            self.history["train_loss"].append(loss)
            self.history["test_accuracy"].append(acc)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}", acc=f"{acc:.3f}")
            log.info("epoch %d: loss %.4f test accuracy %.4f", epoch + 1, loss, acc)
            if out is not None:
                _checkpoint.save(out, self, epoch + 1, keep_previous=self.distributed)
        bar.close()
        return self._finish(out, model)

    def _evaluate(self, split: Split) -> dict[str, float]:
        return evaluate(
            self.runtime,
            split,
            self.config.batch_size,
            self.device,
            nodes=self.strategy.eval_nodes(),
        )

    def _epoch(self, epoch: int, bar) -> float:
        self.runtime.train_mode(True)
        total, count = 0.0, 0
        steps: list[tuple[int, int, list[float]]] = []  # (tick, n, this process's loss terms)
        self.wire.at(phase="train", epoch=epoch, step=0)  # hand-offs before the first step
        for step in self.strategy.epoch(self.runtime, self.config.batch_size, epoch):
            self.wire.at(phase="train", epoch=epoch, step=step.index)
            batch = {k: v.to(self.device) for k, v in step.batch.items()}
            parties = [self.parties[p] for p in step.parties if p in self.parties]
            for party in parties:
                party.zero_grad()
            try:
                result = self._step(batch, step)
                for party in parties:
                    party.step_optimizer()
            except DataError as exc:  # the inputs were checked: non-finite values are ours
                raise self._diverged(epoch, step, "non-finite activations") from exc
            except RuntimeError as exc:
                if "overflow" not in str(exc):
                    raise
                raise self._diverged(epoch, step, "an optimizer step overflowed") from None
            loss = sum(result.losses.values())
            if not math.isfinite(loss):
                raise self._diverged(epoch, step, f"loss {loss}")
            steps.append((self.runtime.tick - 1, len(batch["y"]), list(result.losses.values())))
            total += loss * len(batch["y"])
            count += len(batch["y"])
            bar.update(1)
        if self.distributed:
            return _gather.epoch_loss(self, steps)
        return total / count

    def _diverged(self, epoch: int, step, what: str) -> TrainingError:
        return TrainingError(
            f"training diverged at epoch {epoch + 1}, step {step.index + 1} ({what}); lower --lr "
            f"(now {self.config.lr:g}) or weaken --alpha/--defense, then train again (nothing of "
            "this run was kept)"
        )

    def _step(self, batch, step):
        """One training step; the first one of each plan also counts every party's FLOPs."""
        key = tuple(step.nodes)
        if key in self.flops_per_sample or not self.parties:
            return self.runtime.step(batch, train=True, nodes=step.nodes)
        counts, result = self.runtime.counted_step(batch, nodes=step.nodes)
        n = len(batch["y"])
        self.flops_per_sample[key] = {p: f / n for p, f in counts.items()}
        return result

    def _finish(self, out: Path | None, model: nn.Module) -> TrainResult:
        cfg, ds = self.config, self.dataset
        test = self._evaluate(ds.test)
        sample = leakage_sample(ds.test, n=cfg.dcor_samples, seed=cfg.seed)
        self.wire.at(phase="inference", epoch=cfg.epochs, step=0)
        leak = measure_dcor(
            self.runtime, sample, cfg.batch_size, self.device, nodes=self.strategy.eval_nodes()
        )
        metrics: dict[str, Any] = {
            "dataset": cfg.dataset,
            "model": cfg.model,
            "cut": cfg.cut,
            "topology": cfg.topology,
            "parties": list(self.topology.parties),
            "alpha": cfg.alpha,
            "seed": cfg.seed,
            "epochs": cfg.epochs,
            **{f"test_{k}": v for k, v in test.items()},
            **leak,
            **wire_bytes(self.wire, self.topology, epochs=cfg.epochs),
            **party_costs(self.wire, self.topology, epochs=cfg.epochs),
            **self._flops(),
            **client_accuracies(self.runtime, self.strategy, ds, cfg.batch_size, self.device),
            "train_seconds": round(self.train_seconds, 3),
            "train_loss_per_epoch": self.history["train_loss"],
            "test_accuracy_per_epoch": self.history["test_accuracy"],
        }
        metrics |= hook_metrics(self.runtime)
        if self.distributed:
            metrics = _gather.metrics(self, metrics)
        observations = Observations.from_captures(self.wire.captures)
        if out is not None:  # a kill before metrics.json resumes into this step again
            observations.save(out / "observations.pt")
            if metrics is not None:  # in a distributed run, the label party writes it
                atomic_write_json(out / "metrics.json", metrics)
            _checkpoint.save(out, self, cfg.epochs, captures=False)
        result = TrainResult(cfg, metrics, self.topology, ds, observations, self.wire, out, model)
        for hook in self.hooks:
            hook.on_train_end(result)
        return result

    def _flops(self) -> dict[str, float]:
        """``flops_<party>``: per-sample FLOPs (forward + backward) times samples per epoch."""
        out: dict[str, float] = {}
        sizes = self.strategy.shard_sizes()
        for plan, per_party in self.flops_per_sample.items():
            in_plan = [self.topology.node(n).party for n in plan]
            client = next((p for p in in_plan if p in sizes), None)
            n = sizes[client] if client is not None else len(self.dataset.train)
            for party, per_sample in per_party.items():
                out[f"flops_{party}"] = out.get(f"flops_{party}", 0.0) + per_sample * n
        return out
