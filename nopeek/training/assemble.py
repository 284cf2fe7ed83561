"""One way to assemble a run and to restore it: train, resume, infer and attack targets use it.

- :func:`build_run`: the seeded whole model and the topology cut from it (what a config names);
- :func:`assemble`: that topology and the runtime of the parties this process runs (channel,
  compressors, NoPeek penalties, hooks set up), as a :class:`~nopeek.training.runner.Runner`
  ready to train or to serve;
- :func:`restore`: a run on disk assembled from its config, with every party's segments,
  optimizer, compressors and hook states loaded from its checkpoint, or from each party's own
  checkpoint in a distributed run's gathered folders (``segments_only``: the trained segments
  alone, as an attacker holding the weights gets them).

Why one place: a run rebuilt any other way (another seed stream, another order of hook set-up,
another idea of which relay client holds the segment) would serve or attack other weights than
the ones trained. The state itself moves only through ``state_dict()`` / ``load_state_dict()``
of the runner, its runtime and its parties; :mod:`nopeek.rundir.checkpoint` owns the file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from nopeek.config import TrainConfig
from nopeek.data import Dataset
from nopeek.data.party import PartyData, RunData
from nopeek.errors import CheckpointError, ConfigError
from nopeek.hooks import CutHook
from nopeek.models import MODELS, build_model
from nopeek.plugins import build_hooks
from nopeek.rundir import RunDir, party_folders
from nopeek.rundir import checkpoint as _checkpoint
from nopeek.runtime.channel import Channel, WireLog
from nopeek.runtime.handshake import differences, fingerprint
from nopeek.runtime.plans import first_nodes
from nopeek.seeding import seeded
from nopeek.topology import TOPOLOGIES, Topology
from nopeek.topology.crossings import pack_crossings
from nopeek.topology.shapes import check_shapes
from nopeek.training.runner import Runner

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a CUDA device is one line.

    >>> pick_device("cpu")
    device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked but no CUDA device is available; use --device cpu")
    return torch.device(name)


def _seeded_model(config: TrainConfig, dataset: RunData) -> nn.Module:
    """Build the model with weights fixed by the seed, without touching global RNG state."""
    with seeded(config.seed, "model.init"):
        return build_model(
            config.model, input_shape=dataset.input_shape, n_classes=dataset.n_classes
        )


def _make_model(config: TrainConfig) -> Callable[[tuple[int, ...], int, int], nn.Module]:
    """``(input_shape, n_classes, index) -> model``: fresh models for the other segments of a
    multi-party topology (client bottoms, task heads), each seeded from (seed, index)."""

    def make(input_shape: tuple[int, ...], n_classes: int, index: int) -> nn.Module:
        with seeded(config.seed, "model.segment", index):
            return MODELS.get(config.model).build(tuple(input_shape), n_classes)

    return make


def build_topology(config: TrainConfig, dataset: RunData, model: nn.Module) -> Topology:
    """The topology ``config`` names, over ``model`` (the seeded whole model) and ``dataset``;
    a cut that a skip connection crosses is packed into one message.

    >>> from nopeek.data import load_dataset
    >>> config = TrainConfig(dataset="digits", topology="u-shaped", cut="conv2,fc1").resolved()
    >>> data = load_dataset("digits", seed=0, max_train=60)
    >>> model = build_model(config.model, input_shape=data.input_shape, n_classes=data.n_classes)
    >>> [(n.name, n.party) for n in build_topology(config, data, model).nodes]
    [('client_head', 'client'), ('server', 'server'), ('client_tail', 'client')]
    """
    ctx = config.build_context(dataset, _make_model(config))
    with seeded(config.seed, "topology.init"):  # a layer the topology adds (vertical's adapter)
        topology = TOPOLOGIES.get(config.topology)(model, config.cuts, ctx)
    # the input's shape and dtype only: the dry run packs cuts a skip crosses
    return pack_crossings(topology, tuple(dataset.input_shape), dataset.input_dtype)


def build_run(config: TrainConfig, dataset: RunData) -> tuple[nn.Module, Topology]:
    """The seeded whole model and the topology over it, exactly as a run builds them (what a
    finished run is rebuilt from; a fresh copy for an attacker's architecture). ``config``
    must be resolved.

    >>> from nopeek.data import load_dataset
    >>> config = TrainConfig(dataset="digits", max_train=60).resolved()
    >>> model, topology = build_run(config, load_dataset("digits", seed=0, max_train=60))
    >>> topology.parties
    ['client', 'server']
    """
    model = _seeded_model(config, dataset)
    return model, build_topology(config, dataset, model)


def assemble(
    config: TrainConfig,
    dataset: RunData | None = None,
    *,
    model: nn.Module | None = None,
    topology: Topology | None = None,
    hooks: Sequence[CutHook] = (),
    device: torch.device | str | None = None,
    quiet: bool = True,
    local: list[str] | None = None,
    make_channel: Callable[[WireLog], Channel] | None = None,
    tensorboard: Path | None = None,
) -> Runner:
    """The run ``config`` names, ready to train or serve: its topology and the runtime of the
    parties this process runs, as a :class:`~nopeek.training.runner.Runner`.

    ``config`` must be resolved; ``dataset`` defaults to ``config.load_data()``. ``model``
    replaces the seeded model (a custom model in the Python API); a ``topology`` given with its
    ``model`` is used as it is (a distributed party builds it before meeting the others),
    otherwise one is built and checked against two training samples (one line naming the cut
    whose segment does not fit). ``hooks`` are the hook instances to bind to their parties and
    set up (``build_hooks(config)`` plus custom ones); ``device`` defaults to the config's
    (``auto``: CUDA when available). ``local``, ``make_channel`` and ``tensorboard`` go to the
    :class:`~nopeek.training.runner.Runner` (one party of a distributed run, its channel).

    >>> config = TrainConfig(dataset="digits", max_train=60).resolved()
    >>> runner = assemble(config, device="cpu")
    >>> sorted(runner.parties), runner.epoch, runner.strategy.eval_nodes()
    (['client', 'server'], 0, ['client', 'server'])
    """
    dataset = dataset if dataset is not None else config.load_data()
    device = pick_device(config.device) if device is None else torch.device(device)
    if topology is None:
        if isinstance(dataset, PartyData):  # its rows are not the whole inputs to check with
            raise TypeError(
                "one party's data come with the topology built for them: pass model= and "
                "topology= from build_run"
            )
        model = model if model is not None else _seeded_model(config, dataset)
        topology = build_topology(config, dataset, model)
        check_shapes(topology, dataset.train.x[:2], nodes=first_nodes(topology))
    if model is not None:
        model.to(device)
    return Runner(
        config, dataset, topology, list(hooks), device, quiet=quiet, local=local,
        make_channel=make_channel, tensorboard=tensorboard, model=model,
    )  # fmt: skip


def restore(
    run_dir: str | Path,
    *,
    config: TrainConfig | None = None,
    dataset: Dataset | None = None,
    folders: Mapping[str, str | Path] | None = None,
    segments_only: bool = False,
    device: torch.device | str | None = None,
    into: Runner | None = None,
) -> Runner:
    """The run in ``run_dir`` assembled (:func:`assemble`) with its trained state loaded: every
    party's segments (relay clients holding exactly what they held), optimizer and compressors,
    and the hooks' states (cut noise at inference continues its noise stream).

    ``config`` and ``dataset`` default to the run's (``config.json``, its data); ``folders``
    (party -> the folder of its checkpoint) defaults to the run's own checkpoint, or to each
    party's ``OUT/<party>/`` folder of a gathered distributed run. ``segments_only`` sets up no
    hook and loads the segments alone, no optimizer, compressor or hook state (an attacker's
    copy of the trained weights: the run's hooks, set up, would change the modules or wrap the
    optimizer). ``into`` loads into that runner (from :func:`assemble`) instead of a new one.
    The wire log is not loaded: what the restored run sends is new.

    A checkpoint that is missing or does not fit, one party's folder passed for a whole run, or
    a gathered run without some party's folder: one line naming the fix.

    >>> import tempfile
    >>> from nopeek.training.trainer import train
    >>> config = TrainConfig(dataset="digits", max_train=60, epochs=1, dcor_samples=20)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     trained = train(config, Path(tmp) / "run", quiet=True)
    ...     served = restore(Path(tmp) / "run", device="cpu")
    >>> want = trained.topology.node("client").module.state_dict()
    >>> got = served.parties["client"].modules[0].state_dict()
    >>> all(torch.equal(want[k], got[k]) for k in want)
    True
    """
    run_dir = Path(run_dir)
    if into is None:
        config = config if config is not None else load_run_config(run_dir)
        with_hooks = [] if segments_only else build_hooks(config)
        into = assemble(config, dataset, hooks=with_hooks, device=device)
    homes = _homes(run_dir, into.topology, folders)
    for home, parties in homes.items():
        state = RunDir(home, "run").load_checkpoint()
        if folders is None and home == run_dir:  # not one party's folder of a distributed run
            _check_whole(run_dir, set(state["parties"]), into.topology.parties)
        where = home / RunDir.CHECKPOINT
        _checkpoint.restore(
            state, into.runtime, where=where, parties=parties, segments_only=segments_only
        )
    return into


def _homes(
    run_dir: Path, topology: Topology, folders: Mapping[str, str | Path] | None
) -> dict[Path, list[str]]:
    """Folder -> the parties whose state its checkpoint holds."""
    if folders is None:
        folders = party_folders(run_dir)
        missing = [p for p in topology.parties if folders and p not in folders]
        if missing:
            raise CheckpointError(
                f"the distributed run {run_dir} has no folder for {', '.join(missing)}; gather "
                "every party's OUT/<party>/ folder of the run into it"
            )
        folders = folders or {p: run_dir for p in topology.parties}
    homes: dict[Path, list[str]] = {}
    for party in topology.parties:
        homes.setdefault(Path(folders[party]), []).append(party)
    return homes


def _check_whole(run_dir: Path, held: set[str], parties: list[str]) -> None:
    """Refuse one party's folder of a distributed run (``--run D/server``): restoring the run
    needs every party's segments; say which folder holds them all, or what to gather."""
    if not held < set(parties):
        return
    own, parent = ", ".join(sorted(held)), Path(run_dir).parent
    gathered = set(party_folders(parent)) >= set(parties)
    fix = (
        f"pass --run {parent}, which holds every party's folder"
        if gathered
        else f"gather every party's folder ({', '.join(parties)}) into one folder and pass it"
    )
    raise CheckpointError(
        f"{run_dir} is {own}'s folder of a distributed run: it holds only {own}'s segments, and "
        f"restoring the run needs every party's; {fix}"
    )


def load_run_config(
    run_dir: str | Path,
    *,
    folders: Mapping[str, str | Path] | None = None,
    checkpoint: bool = True,
) -> TrainConfig:
    """The run's config; a missing folder or config (or, with ``checkpoint``, checkpoint) is
    one line.

    A distributed run (``OUT/<party>/`` folders gathered in one place, or ``folders``: party ->
    folder) has one config per party; they must agree on every setting the parties share (each
    party's own, such as its device, apart: :func:`~nopeek.runtime.handshake.fingerprint`), and
    the first party's is returned.

    >>> import json, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with RunDir(Path(tmp) / "run", "run").writing() as where:
    ...         _ = (where / RunDir.CONFIG).write_text(json.dumps({"dataset": "digits", "seed": 3}))
    ...     load_run_config(Path(tmp) / "run", checkpoint=False).seed
    3
    """
    run_dir = Path(run_dir)
    folders = dict(folders) if folders is not None else party_folders(run_dir)
    paths = {p: Path(f) for p, f in folders.items()} or {run_dir.name: run_dir}
    configs = {}
    for party, path in paths.items():
        folder = RunDir.open(path, "run")
        configs[party] = folder.config()
        if checkpoint and not folder.checkpoint_path.is_file():
            raise CheckpointError(
                f"{path} has no {RunDir.CHECKPOINT} to restore the run from; train the run "
                f"to the end first (`nopeek train --out {run_dir}`)"
            )
    (first, config), *others = configs.items()
    mine = fingerprint(config.to_dict(), resume=False)
    for party, theirs in others:
        diffs = differences(mine, fingerprint(theirs.to_dict(), resume=False), me=first, peer=party)
        if diffs:
            raise ConfigError(
                f"the party folders of {run_dir} come from different runs: {'; '.join(diffs)}; "
                "gather the folders of one distributed run"
            )
    return config


__all__ = ["assemble", "build_run", "build_topology", "load_run_config", "pick_device", "restore"]
