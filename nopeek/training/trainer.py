"""The split trainer's entry point: ``train`` (one process, or one party of a distributed run).

``train`` validates everything before it creates the run directory, assembles the run
(:func:`nopeek.training.assemble.assemble`: the topology, every cut through a channel, see
:mod:`nopeek.runtime`) and runs it (:class:`~nopeek.training.runner.Runner`): checkpoints
atomically after each epoch (``--resume`` continues to bit-identical final weights),
evaluation on the test split, and the leakage of the cut activations (distance correlation).
``build_run`` and ``pick_device`` live in :mod:`nopeek.training.assemble` (also importable
from here).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import torch
from torch import nn

from nopeek.compress import by_kind
from nopeek.config import TrainConfig
from nopeek.data import Dataset, check_finite
from nopeek.data.keyed import KeyedRows
from nopeek.data.party import PartyData, Roster, RunData, party_view, read_own, roster
from nopeek.errors import CheckpointError, ConfigError
from nopeek.hooks import CutHook
from nopeek.plugins import build_hooks
from nopeek.rundir import MARKER, RunDir
from nopeek.rundir import checkpoint as _checkpoint
from nopeek.runtime.align import align_own
from nopeek.runtime.channel import WireLog
from nopeek.runtime.distributed import TorchDistributedChannel
from nopeek.runtime.handshake import agree, fingerprint, prove
from nopeek.runtime.launch import Launch, schedule
from nopeek.topology import Topology
from nopeek.training.assemble import assemble, build_run, build_topology, pick_device
from nopeek.training.epoch_log import check_tensorboard
from nopeek.training.runner import Runner, TrainResult

if TYPE_CHECKING:  # gRPC is an optional dependency (nopeek[deploy])
    from nopeek.runtime.grpc_channel import GrpcChannel

    # a distributed party's open channel (Launch.open)
    PartyChannel: TypeAlias = TorchDistributedChannel | GrpcChannel

log = logging.getLogger(__name__)


def _prepare_out(where: Path | RunDir | None, *, resume: bool, overwrite: bool) -> RunDir | None:
    """Check ``where`` (a folder, or the :class:`~nopeek.rundir.RunDir` whose lock the caller
    holds) before anything runs; the :class:`~nopeek.rundir.RunDir` to write through.

    Refuses a file, a link or an unwritable folder, an existing run without ``--overwrite`` or
    ``--resume``, and (with ``--overwrite``) any folder that nopeek did not write.
    """
    if where is None:
        if resume:
            raise CheckpointError("--resume needs the folder of the run to continue (out)")
        return None
    run_dir = where if isinstance(where, RunDir) else RunDir(where, "run")
    out = run_dir.path
    run_dir.plan(resume=resume, overwrite=overwrite)
    if resume and not run_dir.checkpoint_path.exists():
        if out.is_dir() and any(p.name != MARKER for p in out.iterdir()):  # killed in epoch 1
            raise CheckpointError(
                f"no checkpoint in {out} to resume (the run stopped in its first epoch); "
                "train without --resume, with --overwrite to replace the partial run"
            )
        raise CheckpointError(f"no checkpoint in {out} to resume; train without --resume first")
    return run_dir


def train(
    config: TrainConfig,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    hooks: Sequence[CutHook] = (),
    model: nn.Module | None = None,
    dataset: Dataset | None = None,
    launch: Launch | None = None,
    tensorboard: str | Path | None = None,
) -> TrainResult:
    """Train a split model as ``config`` says; write the run to ``out`` (if given).

    The config's ``defenses`` and ``malicious_server`` become hooks through the installed
    plugins (:func:`nopeek.plugins.build_hooks`); ``hooks`` adds custom ones after them (see
    :mod:`nopeek.hooks`). ``model`` and ``dataset`` override the registry lookups (for custom
    models in the Python API).

    With ``launch`` (:class:`~nopeek.runtime.launch.PartyLaunch`) this process runs one party of
    a distributed run: it writes ``out/<party>/`` (its config, checkpoint, observations; the
    label party also ``metrics.json``), and gives the same numbers as the in-process run.

    While it trains, a run appends one row per epoch to ``out/metrics.csv``; ``tensorboard``
    names a folder for TensorBoard scalars (needs ``pip install 'nopeek[tensorboard]'``).
    """
    tensorboard = _tensorboard_dir(tensorboard, launch)
    if launch is not None:
        return _train_party(config, out, launch, resume=resume, overwrite=overwrite, quiet=quiet)
    config.validate()
    config = config.resolved() if model is None else config
    hooks = [*build_hooks(config), *hooks]  # bad specs fail here, before anything is written
    out = Path(out) if out is not None else None
    folder = RunDir(out, "run") if out is not None else None
    with folder.held() if folder is not None else contextlib.nullcontext():
        return _train_in_process(
            config, folder, hooks, resume=resume, overwrite=overwrite, quiet=quiet, model=model,
            dataset=dataset, tensorboard=tensorboard,
        )  # fmt: skip


def _train_in_process(
    config: TrainConfig,
    folder: RunDir | None,
    hooks: list[CutHook],
    *,
    resume: bool,
    overwrite: bool,
    quiet: bool,
    model: nn.Module | None,
    dataset: Dataset | None,
    tensorboard: Path | None,
) -> TrainResult:
    """:func:`train` in this process, once ``out``'s lock is held (one writer from the first
    check to the last byte)."""
    out = None if folder is None else folder.path
    run_dir = _prepare_out(folder, resume=resume, overwrite=overwrite)
    device = pick_device(config.device)
    if dataset is None:
        dataset = config.load_data()
    for name in ("train", "test"):
        check_finite(getattr(dataset, name).x, what=f"{dataset.name} {name} inputs")
    state = _checkpoint.load(out, config) if resume and out is not None else None
    finished = run_dir is not None and run_dir.has(RunDir.METRICS)
    if state is not None and state["epoch"] >= config.epochs and finished:
        raise ConfigError(
            f"run {out} already finished its {config.epochs} epochs; nothing to resume "
            "(train anew with --overwrite)"
        )
    runner = assemble(
        config, dataset, model=model, hooks=hooks, device=device, quiet=quiet,
        tensorboard=tensorboard,
    )  # fmt: skip
    return _run_in(run_dir, out, runner, state, resume=resume, overwrite=overwrite)


def _tensorboard_dir(folder: str | Path | None, launch: Launch | None) -> Path | None:
    """The TensorBoard folder, checked before anything runs (one line if it cannot be used)."""
    if folder is None:
        return None
    if launch is not None:
        raise ConfigError(
            "--tensorboard is for in-process runs; a distributed run's label party writes the "
            "same curves to metrics.csv"
        )
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--tensorboard {folder} is a file; give a folder")
    check_tensorboard()
    return folder


def _run_in(
    run_dir: RunDir | None,
    out: Path | None,
    runner: Runner,
    state: dict[str, Any] | None,
    *,
    resume: bool,
    overwrite: bool,
    keep: Callable[[Path], bool] | None = None,
) -> TrainResult:
    """Run ``runner`` writing through ``run_dir``: a fresh run in place (an interrupt keeps it for
    --resume, an error removes it); an overwrite in a staging sibling swapped in only at the end
    (see :mod:`nopeek.rundir`)."""
    if run_dir is None:
        return runner.run(None, state)
    with run_dir.writing(resume=resume, overwrite=overwrite, keep=keep) as where:
        result = runner.run(where, state)
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


def _train_party(
    config: TrainConfig,
    out: str | Path | None,
    launch: Launch,
    *,
    resume: bool,
    overwrite: bool,
    quiet: bool,
) -> TrainResult:
    """One party of a distributed run (see :func:`train`). It hands the runtime only its own
    data (:func:`~nopeek.data.party.party_view`); with ``id_column`` it reads only its own files
    and aligns the samples with the other parties first
    (:func:`~nopeek.runtime.align.align_own`)."""
    config.validate()
    config = config.resolved()
    hooks = build_hooks(config)
    # NCCL only when asked for on every party (--device cuda); "auto" could differ per host
    device = _party_device(config.device)
    start = _PartyStart.of(config, launch)
    me, parties, label = start.me, start.who.parties, start.who.label_parties[0]
    out = Path(out) / me if out is not None else None
    run_dir = _prepare_out(out, resume=resume, overwrite=overwrite)
    state = _checkpoint.load(out, config) if resume and out is not None else None
    launch.join(me, device, [p for p in parties if p != me])
    plan = (
        schedule(start.topology, _probe(start.dataset))
        if start.topology is not None and start.dataset is not None  # not its own files
        else None
    )
    channel = launch.open(
        me, parties, max_batch=config.batch_size, device=device, plan=plan,
        codecs=by_kind(config.compress),
    )  # fmt: skip
    try:
        if launch.secret is not None:
            prove(channel, me, label, parties, launch.secret)
        data, model, topology = start.data(config, channel, launch)
        runner = assemble(
            config, data, model=model, topology=topology, hooks=hooks, device=device,
            quiet=quiet, local=[me], make_channel=_attached(channel),
        )  # fmt: skip
        settings = fingerprint(config.to_dict(), resume=resume, data=data.agreed)
        epoch = state["epoch"] if state is not None else 0
        common = agree(channel, me, label, parties, settings, epoch=epoch)
        if state is not None and out is not None:
            state = _checkpoint.load_epoch(out, config, common)
        return _run_in(
            run_dir, out, runner, state, resume=resume, overwrite=overwrite, keep=_has_checkpoint
        )
    except Exception as exc:
        channel.broadcast_error(f"{me}: {str(exc).splitlines()[0][:300]}")
        raise
    finally:
        launch.close(channel)


@dataclass
class _PartyStart:
    """What a party knows before it meets the others: who takes part (a topology, or the
    :class:`~nopeek.data.party.Roster` of a run on the parties' own files), which party it is,
    and its data: a data set loaded whole with the model built, or its own files' rows (the
    model is built once the parties have aligned)."""

    who: Topology | Roster
    me: str
    dataset: Dataset | None = None
    model: nn.Module | None = None
    topology: Topology | None = None
    rows: KeyedRows | None = None

    @classmethod
    def of(cls, config: TrainConfig, launch: Launch) -> _PartyStart:
        if config.own_files:  # read before meeting anyone: a bad file stops only this party
            who = roster(config)
            me = launch.party(who)
            return cls(who, me, rows=read_own(config, who, me))
        dataset = config.load_data()
        check_finite(dataset.train.x, what=f"{dataset.name} train inputs")
        model, topology = build_run(config, dataset)
        return cls(topology, launch.party(topology), dataset, model, topology)

    def data(
        self, config: TrainConfig, channel: PartyChannel, launch: Launch
    ) -> tuple[PartyData, nn.Module, Topology]:
        """``(this party's data, the model, the topology)``; on its own files, after aligning
        with the others over ``channel`` (which then gets the run's schedule)."""
        if not config.own_files:
            assert self.dataset is not None and self.model is not None and self.topology is not None
            return party_view(self.dataset, self.topology, self.me), self.model, self.topology
        assert isinstance(self.who, Roster) and self.rows is not None
        data = align_own(config, self.who, self.me, self.rows, channel)
        model, topology = build_run(config, data)
        self.who.check(topology)
        launch.schedule(channel, schedule(topology, _probe(data)), max_batch=config.batch_size)
        return data, model, topology


def _probe(data: RunData) -> torch.Tensor:
    """Two zero samples of the model's input: the dry run that measures the cuts needs only
    the shape (the architecture is public; no party's data is involved)."""
    return torch.zeros(2, *data.input_shape, dtype=data.input_dtype)


def _attached(channel: PartyChannel) -> Callable[[WireLog], PartyChannel]:
    """The runner's ``make_channel``: the party's open channel, logging to the run's wire log."""

    def make(log: WireLog) -> PartyChannel:
        channel.log = log
        return channel

    return make


# build_run, build_topology, pick_device and TrainResult are importable from here too
__all__ = ["TrainResult", "build_run", "build_topology", "pick_device", "train"]
