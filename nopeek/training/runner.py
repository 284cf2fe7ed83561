"""The run loop of one split-learning run: epochs over the strategy's plan, checkpoints,
evaluation, leakage measurement and the final metrics.

A :class:`Runner` holds the runtime (every cut through a channel) of the parties this process
runs: all of them in one process, or one in a distributed run. It is built in one place,
:func:`nopeek.training.assemble.assemble` (train, resume, infer and attack targets all go
through it), and its whole state goes through :meth:`Runner.state_dict` /
:meth:`Runner.load_state_dict` (the checkpoint file, :mod:`nopeek.rundir.checkpoint`, is that
state in its on-disk layout).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from nopeek.compress import for_party
from nopeek.config import TrainConfig
from nopeek.data.party import RunData, RunSplit
from nopeek.errors import DataError, TrainingError
from nopeek.hooks import CutHook, TrainContext, bind_hooks, hook_metrics
from nopeek.io import atomic_write_json
from nopeek.observe import Observations, capture_policy
from nopeek.regularizers import nopeek_penalties
from nopeek.rundir import RunDir
from nopeek.rundir import checkpoint as _checkpoint
from nopeek.runtime import InProcessRuntime, StepOutput, _gather
from nopeek.runtime.channel import Capture, Channel, InProcessChannel, WireLog, WireRecord
from nopeek.runtime.plans import STRATEGIES, Step
from nopeek.topology import Topology
from nopeek.training.epoch_log import EpochLog
from nopeek.training.measures import (
    client_accuracies,
    evaluate,
    flops_per_epoch,
    leakage_sample,
    measure_dcor,
    party_costs,
    wire_bytes,
)

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """The outcome of a run: flat metrics (as in metrics.json) and the live objects.

    In a distributed run, ``metrics`` is None at every party but the label party (which writes
    metrics.json), and ``dataset`` is this party's own part of the data.
    """

    config: TrainConfig
    metrics: dict[str, Any] | None
    topology: Topology
    dataset: RunData
    observations: Observations
    wire: WireLog
    run_dir: Path | None = None
    model: nn.Module | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return dict(self.metrics or {})


class Runner:
    """Holds the live state of one run: the runtime, the strategy, the wire log, history.

    Build it with :func:`nopeek.training.assemble.assemble` (or
    :func:`~nopeek.training.assemble.restore` for a run on disk); :meth:`run` trains it,
    ``runtime``/``strategy``/``wire`` serve it (split inference), and :meth:`state_dict` /
    :meth:`load_state_dict` carry its state between processes (a checkpoint, ``--resume``).
    """

    def __init__(
        self,
        config: TrainConfig,
        dataset: RunData,
        topology: Topology,
        hooks: list[CutHook],
        device: torch.device,
        *,
        quiet: bool,
        local: list[str] | None = None,
        make_channel: Callable[[WireLog], Channel] | None = None,
        tensorboard: Path | None = None,
        model: nn.Module | None = None,
    ) -> None:
        """``local``: the parties this process runs (default all: the in-process runtime);
        ``make_channel(wire_log)`` builds the channel (default in-process); ``tensorboard``: a
        folder for TensorBoard scalars (written by the process that writes metrics.json);
        ``model``: the whole model the topology was cut from (handed on in the result)."""
        self.config, self.dataset, self.topology = config, dataset, topology
        self.device, self.quiet, self.tensorboard = device, quiet, tensorboard
        self.model = model
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
        compress = {
            p: for_party(config.compress, seed=config.seed, party=p)
            for p in (local or topology.parties)
        }
        self.runtime = InProcessRuntime(
            topology,
            channel,
            hooks=bound,
            penalties=nopeek_penalties(topology, config.alpha),
            lr=config.lr,
            local=local,
            compress=compress,
        )
        self.label_party = topology.label_parties[0]
        self.distributed = local is not None and set(local) != set(topology.parties)
        self.parties = self.runtime.parties
        self.hooks = self.runtime.hooks
        self._setup_hooks(bound)
        self.epoch = 0  # epochs done
        self.history: dict[str, list[float]] = {"train_loss": [], "test_accuracy": []}
        self.train_seconds = 0.0
        self.flops_per_sample: dict[tuple[str, ...], dict[str, float]] = {}
        self.capture_files: list[tuple[str, int]] = []  # the checkpoint's shards: (file, count)

    def state_dict(self, *, captures: bool = True) -> dict[str, Any]:
        """The run's state as plain tensors and containers (what ``--resume`` needs to continue
        bit for bit).

        ``config`` (the settings it was made with, ``TrainConfig.to_dict()``; checked by the
        checkpoint reader, not loaded), ``epoch`` (epochs done), the runtime's ``parties`` (party
        -> :meth:`~nopeek.runtime.party.Party.state_dict`: segments, optimizer, compressors) and
        ``hooks`` (each hook instance's state once: noise generators, accountants), ``history``
        (name -> one number per epoch), ``train_seconds``, ``flops_per_sample`` (``"node|node"``
        -> party -> FLOPs), ``channel_bytes`` (a distributed channel's header and payload byte
        counters), ``wire_records`` (one tuple per message), ``captures`` (``(record, tensor
        (N, ...), ids (N,))``; ``captures=False``: none, for a finished run whose captures are
        in observations.pt, or a checkpoint that keeps them in shards) and ``capture_files``
        (the shards written so far: ``(file name, captures in it)``; see
        :func:`nopeek.rundir.checkpoint.save`).

        >>> from nopeek import TrainConfig
        >>> from nopeek.training.assemble import assemble
        >>> config = TrainConfig(dataset="digits", max_train=60, epochs=1).resolved()
        >>> runner = assemble(config, device="cpu")
        >>> state = runner.state_dict()
        >>> state["epoch"], sorted(state["parties"]), state["history"]["train_loss"]
        (0, ['client', 'server'], [])
        """
        channel = self.runtime.channel
        return {
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            **self.runtime.state_dict(),
            "history": {k: list(v) for k, v in self.history.items()},
            "train_seconds": self.train_seconds,
            "flops_per_sample": {"|".join(k): v for k, v in self.flops_per_sample.items()},
            "channel_bytes": [
                int(getattr(channel, "header_bytes", 0)),
                int(getattr(channel, "payload_bytes", 0)),
            ],
            "wire_records": [r.row() for r in self.wire.records],
            "captures": [(c.record.row(), c.tensor, c.ids) for c in self.wire.captures]
            if captures
            else [],
            "capture_files": [list(f) for f in self.capture_files],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put :meth:`state_dict`'s output back (``config`` is not loaded: the caller checks
        it). A state that does not fit this run raises ``KeyError``, ``ValueError`` or
        ``RuntimeError``; :func:`nopeek.rundir.checkpoint.restore` turns them into one line."""
        self.runtime.load_state_dict(state)
        self.epoch = int(state["epoch"])
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.train_seconds = float(state["train_seconds"])
        saved_flops = state.get("flops_per_sample", {})
        self.flops_per_sample = {tuple(k.split("|")): dict(v) for k, v in saved_flops.items()}
        channel = self.runtime.channel
        saved = state.get("channel_bytes")
        if (
            saved is not None
            and hasattr(channel, "header_bytes")
            and hasattr(channel, "payload_bytes")
        ):
            channel.header_bytes, channel.payload_bytes = (int(v) for v in saved)
        self.wire.records[:] = [WireRecord(*r) for r in state["wire_records"]]
        self.wire.captures[:] = [Capture(WireRecord(*r), t, i) for r, t, i in state["captures"]]
        self.capture_files = [(str(n), int(c)) for n, c in state.get("capture_files", [])]

    def _setup_hooks(self, bound: dict[str, list[CutHook]]) -> None:
        cfg, sizes = self.config, self.strategy.shard_sizes()
        done: set[int] = set()
        for party, hooks in bound.items():
            ctx = TrainContext(
                n_train=sizes.get(party, len(self.dataset.train)),
                batch_size=cfg.batch_size,
                epochs=cfg.epochs * self.strategy.passes,  # passes over the shard (DP accounting)
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

    def run(self, out: Path | None, state: dict[str, Any] | None = None) -> TrainResult:
        """Train the epochs left (all, or those after ``state``: a checkpoint as
        :func:`nopeek.rundir.checkpoint.read` returns it), writing the run into ``out``."""
        if state is not None:
            _checkpoint.restore(state, self)
        start_epoch = self.epoch
        cfg = self.config
        if out is not None and state is None:
            atomic_write_json(out / RunDir.CONFIG, cfg.to_dict())
        steps_per_epoch = sum(-(-len(s) // cfg.batch_size) for s in self.strategy.shards.values())
        bar = tqdm(
            total=(cfg.epochs - start_epoch) * steps_per_epoch,
            disable=self.quiet or not sys.stderr.isatty(),
            desc="train",
            unit="step",
        )
        with self._epoch_log(out) as epochs:
            for epoch in range(start_epoch, cfg.epochs):
                began = time.perf_counter()
                loss = self._epoch(epoch, bar)
                self.train_seconds += time.perf_counter() - began
                acc = self._evaluate(self.dataset.test).get("accuracy", math.nan)
                self.history["train_loss"].append(loss)
                self.history["test_accuracy"].append(acc)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}", acc=f"{acc:.3f}")
                log.info("epoch %d: loss %.4f test accuracy %.4f", epoch + 1, loss, acc)
                epochs.write(epoch + 1, {k: v[-1] for k, v in self.history.items()})
                self.epoch = epoch + 1
                if out is not None:
                    _checkpoint.save(out, self, self.epoch, keep_previous=self.distributed)
        bar.close()
        return self._finish(out)

    @property
    def writes_metrics(self) -> bool:
        """Whether this process writes the run's metrics (in a distributed run: the label
        party)."""
        return not self.distributed or self.label_party in self.parties

    def _epoch_log(self, out: Path | None) -> EpochLog:
        """metrics.csv and TensorBoard (where this process writes the metrics), and one
        progress line per epoch where stderr is no terminal (the bar needs one)."""
        mine = self.writes_metrics
        return EpochLog(
            self.history,
            epochs=self.config.epochs,
            csv_path=out / RunDir.METRICS_CSV if out is not None and mine else None,
            tensorboard=self.tensorboard if mine else None,
            lines=not self.quiet and not sys.stderr.isatty(),
        )

    def _evaluate(self, split: RunSplit) -> dict[str, float]:
        return evaluate(
            self.runtime,
            split,
            self.config.batch_size,
            self.device,
            nodes=self.strategy.eval_nodes(),
        )

    def _epoch(self, epoch: int, bar: tqdm[Any]) -> float:
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
            n = len(batch["ids"])
            steps.append((self.runtime.tick - 1, n, list(result.losses.values())))
            total += loss * n
            count += n
            bar.update(1)
        if self.distributed:
            return _gather.epoch_loss(self, steps)
        return total / count

    def _diverged(self, epoch: int, step: Step, what: str) -> TrainingError:
        return TrainingError(
            f"training diverged at epoch {epoch + 1}, step {step.index + 1} ({what}); lower --lr "
            f"(now {self.config.lr:g}) or weaken --alpha/--defense, then train again (nothing of "
            "this run was kept)"
        )

    def _step(self, batch: dict[str, Tensor], step: Step) -> StepOutput:
        """One training step; the first one of each plan also counts every party's FLOPs."""
        key = tuple(step.nodes)
        if key in self.flops_per_sample or not self.parties:
            return self.runtime.step(batch, train=True, nodes=step.nodes)
        counts, result = self.runtime.counted_step(batch, nodes=step.nodes)
        n = len(batch["ids"])
        self.flops_per_sample[key] = {p: f / n for p, f in counts.items()}
        return result

    def _finish(self, out: Path | None) -> TrainResult:
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
            "train_samples": len(ds.train),
            **{f"test_{k}": v for k, v in test.items()},
            **leak,
            **wire_bytes(self.wire, self.topology, epochs=cfg.epochs),
            **party_costs(self.wire, self.topology, epochs=cfg.epochs),
            **flops_per_epoch(
                self.flops_per_sample,
                self.topology,
                {c: n * self.strategy.passes for c, n in self.strategy.shard_sizes().items()},
                len(ds.train),
            ),
            **client_accuracies(self.runtime, self.strategy, ds, cfg.batch_size, self.device),
            "train_seconds": round(self.train_seconds, 3),
            "train_loss_per_epoch": self.history["train_loss"],
            "test_accuracy_per_epoch": self.history["test_accuracy"],
        }
        metrics |= hook_metrics(self.runtime)
        # in a distributed run, the label party's merged metrics (None at the other parties)
        gathered = _gather.metrics(self, metrics) if self.distributed else metrics
        observations = Observations.from_captures(self.wire.captures)
        if out is not None:  # a kill before metrics.json resumes into this step again
            observations.save(out / RunDir.OBSERVATIONS)
            if gathered is not None:  # in a distributed run, the label party writes it
                atomic_write_json(out / RunDir.METRICS, gathered)
            _checkpoint.save(out, self, self.epoch, captures=False)
        result = TrainResult(
            cfg, gathered, self.topology, ds, observations, self.wire, out, self.model
        )
        for hook in self.hooks:
            hook.on_train_end(result)
        return result
