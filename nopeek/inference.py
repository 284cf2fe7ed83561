"""Split inference: a trained run's parties answer predictions through the cut, as in training.

:func:`infer` rebuilds a finished run (config, seeded topology, every party's trained segments
from ``checkpoint.pt``, relay clients holding exactly what they held), binds the config's hooks
in eval mode (cut noise configured with ``inference=true`` keeps adding noise; hook states such
as noise generators come from the checkpoint) and runs the samples through the strategy's
prediction path (:meth:`~nopeek.runtime.plans.Strategy.eval_nodes`) over an in-process channel.
Every message is on the wire log with phase ``inference`` and captured, so
``observations.pt`` holds what a curious server saw while serving (attack it with
``nopeek attack --run RUN --observations OUT/observations.pt``). In U-shaped runs the
prediction is computed by the client's tail: no logits cross the wire.

The output folder (a :class:`~nopeek.rundir.RunDir` of kind ``inference``) holds
``predictions.csv`` (``id, label, prediction, score_<class>...``: softmax scores of the first
objective; ``label`` empty where unknown), ``observations.pt`` and ``inference.json``.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from nopeek.compress import for_party
from nopeek.config import TrainConfig
from nopeek.data import Dataset, Split, load_dataset
from nopeek.errors import CheckpointError, ConfigError, DataError
from nopeek.hooks import TrainContext, bind_hooks
from nopeek.io import atomic_write_bytes, atomic_write_json
from nopeek.observe import Observations, capture_policy
from nopeek.plugins import build_hooks
from nopeek.rundir import RunDir, party_folders
from nopeek.rundir import checkpoint as _checkpoint
from nopeek.runtime import InProcessRuntime
from nopeek.runtime.channel import InProcessChannel, WireLog
from nopeek.runtime.plans import STRATEGIES
from nopeek.training.measures import predict_all, task_labels
from nopeek.training.trainer import build_run, pick_device

log = logging.getLogger(__name__)

SPLITS = ("test", "aux", "train")


@dataclass
class InferenceResult:
    """What :func:`infer` produced: ``logits`` ``{objective: (N, classes)}`` in sample order,
    the samples' ``ids`` (N,) and ``labels`` (N,) (None when unknown), flat ``metrics`` (as in
    ``inference.json``), the observations and the wire log."""

    metrics: dict[str, Any]
    ids: Tensor
    labels: Tensor | None
    logits: dict[str, Tensor]
    observations: Observations
    wire: WireLog
    out: Path | None = None
    class_names: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return dict(self.metrics)


def load_run_config(run_dir: Path) -> TrainConfig:
    """The finished run's config; a missing folder, config or checkpoint is one line.

    A distributed run (``OUT/<party>/`` folders, gathered in one place) has one config per
    party; they must agree.
    """
    folders = party_folders(run_dir) or {"": Path(run_dir)}
    configs = {}
    for party, path in folders.items():
        folder = RunDir.open(path, "run")
        configs[party] = folder.config()
        if not folder.checkpoint_path.is_file():
            raise CheckpointError(
                f"{path} has no {RunDir.CHECKPOINT} to serve predictions from; train the run "
                f"to the end first (`nopeek train --out {run_dir}`)"
            )
    first, *others = configs.items()
    for party, config in others:
        if config.to_dict() != first[1].to_dict():
            raise ConfigError(
                f"the parties of {run_dir} were trained with different flags ({first[0]} and "
                f"{party}); gather the folders of one distributed run"
            )
    return first[1]


def _samples(config: TrainConfig, dataset: Dataset, split: str, spec: str | None) -> Split:
    """The samples to predict: a split of the run's data set, or every sample of ``spec``."""
    if spec is None:
        names = [p.strip() for p in split.split(",")]
        if not names or any(n not in SPLITS for n in names) or len(set(names)) < len(names):
            raise ConfigError(
                f"--split must be one or more of {', '.join(SPLITS)} (comma-separated, each "
                f"once), got {split!r}"
            )
        parts = [getattr(dataset, n) for n in names]
        return Split(*(torch.cat([getattr(p, f) for p in parts]) for f in ("x", "y", "ids")))
    other = load_dataset(
        spec, seed=config.seed, data_root=config.data_root, download=config.download
    )
    if tuple(other.input_shape) != tuple(dataset.input_shape):
        raise DataError(
            f"--dataset {spec} has samples of shape {tuple(other.input_shape)}, the run was "
            f"trained on {tuple(dataset.input_shape)}; pass data shaped like the run's"
        )
    if other.n_classes != dataset.n_classes:
        raise DataError(
            f"--dataset {spec} has {other.n_classes} classes, the run {dataset.n_classes}; pass "
            "data with the run's classes"
        )
    parts = [other.train, other.test, other.aux]
    whole = Split(*(torch.cat([getattr(p, f) for p in parts]) for f in ("x", "y", "ids")))
    return whole.subset(torch.argsort(whole.ids))


def _setup_hooks(bound, *, config, dataset, topology, strategy, parties, device) -> None:
    """Each hook's ``setup`` with the training context (as the trainer's ``Runner`` does),
    before the checkpoint's hook states are loaded into them."""
    sizes, done = strategy.shard_sizes(), set()
    for party, hooks in bound.items():
        ctx = TrainContext(
            n_train=sizes.get(party, len(dataset.train)),
            batch_size=config.batch_size,
            epochs=config.epochs,
            seed=config.seed,
            delta=config.delta,
            parties=parties,
            data_party=party if party in topology.data_parties else topology.data_party,
            label_party=topology.label_parties[0],
            device=device,
            extra={"n_classes": dataset.n_classes, "alpha": config.alpha, "hooks": hooks},
        )
        for hook in hooks:
            if id(hook) not in done:
                hook.setup(ctx)
                done.add(id(hook))


def serve(config: TrainConfig, dataset: Dataset, run_dir: Path):
    """The run's runtime with its trained segments and hook states loaded, its strategy, the
    wire log (every inference message captured) and the device."""
    device = pick_device(config.device)
    model, topology = build_run(config, dataset)
    model.to(device)
    bound = bind_hooks(build_hooks(config), topology)
    wire = WireLog(capture=capture_policy(record_samples=0, batch_size=1, epochs=config.epochs))
    strategy = STRATEGIES.get(topology.strategy)(
        topology, dataset.train, non_iid=config.non_iid, seed=config.seed
    )
    compress = {p: for_party(config.compress, seed=config.seed, party=p) for p in topology.parties}
    runtime = InProcessRuntime(
        topology, InProcessChannel(wire), hooks=bound, lr=config.lr, compress=compress
    )
    _setup_hooks(
        bound,
        config=config,
        dataset=dataset,
        topology=topology,
        strategy=strategy,
        parties=runtime.parties,
        device=device,
    )
    # segments (relay clients: only what they held), optimizers, hook states; the checkpoint's
    # training wire log goes to a throw-away log
    folders = party_folders(run_dir)
    if not folders:
        state = RunDir(run_dir, "run").load_checkpoint()
        _check_whole(run_dir, set(state["parties"]), topology.parties)
        _checkpoint.restore(
            state, SimpleNamespace(parties=runtime.parties, hooks=runtime.hooks, wire=WireLog())
        )
    missing = [p for p in topology.parties if folders and p not in folders]
    if missing:
        raise CheckpointError(
            f"the distributed run {run_dir} has no folder for {', '.join(missing)}; gather "
            "every party's OUT/<party>/ folder of the run into it"
        )
    for name in topology.parties if folders else ():  # each party from its own checkpoint
        party = runtime.parties[name]
        state = RunDir(folders[name], "run").load_checkpoint()
        hooks = list({id(h): h for h in party.hooks}.values())
        _checkpoint.restore(
            state, SimpleNamespace(parties={name: party}, hooks=hooks, wire=WireLog())
        )
    return runtime, strategy, wire, device


def _check_whole(run_dir: Path, held: set[str], parties: list[str]) -> None:
    """Refuse one party's folder of a distributed run (``--run D/server``): serving runs every
    party's segments; say which folder holds them all, or what to gather."""
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
        f"serving predictions needs every party's; {fix}"
    )


def infer(
    run: str | Path,
    *,
    split: str = "test",
    dataset: str | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
) -> InferenceResult:
    """Predict ``split`` of the run's data (or every sample of data spec ``dataset``) through
    the trained split model of run directory ``run``; write ``out`` if given.

    Accuracy on the test split equals the run's ``test_accuracy`` (same weights, batches and
    order); with cut noise at inference the noise stream continues from the checkpoint.
    """
    run_dir = Path(run)
    config = load_run_config(run_dir)
    target = RunDir(out, "inference") if out is not None else None
    if target is not None:
        target.plan(overwrite=overwrite)
    data = config.load_data()
    samples = _samples(config, data, split, dataset)
    runtime, strategy, wire, device = serve(config, data, run_dir)
    wire.at(phase="inference", epoch=config.epochs, step=0)
    logits = predict_all(
        runtime,
        samples,
        config.batch_size,
        device,
        phase="inference",
        nodes=strategy.eval_nodes(),
    )
    result = _result(run_dir, config, runtime, samples, logits, wire, split, dataset, data)
    if target is not None:
        with target.writing(overwrite=overwrite) as where:
            atomic_write_bytes(where / "predictions.csv", _csv(result).encode())
            result.observations.save(where / RunDir.OBSERVATIONS)
            atomic_write_json(where / "inference.json", result.metrics)
        result.out = Path(out)
    return result


def _result(run_dir, config, runtime, samples, logits, wire, split, spec, data):
    topo = runtime.topology
    objectives = {o.name: o for o in topo.objectives}
    metrics: dict[str, Any] = {
        "run": str(run_dir),
        "data": spec if spec is not None else f"{config.dataset}:{split}",
        "topology": config.topology,
        "n_samples": len(samples),
        "label_party": topo.label_parties[0],
    }
    labels = samples.y if bool((samples.y >= 0).all()) else None
    for i, (name, z) in enumerate(logits.items()):
        if labels is None:
            break
        y = task_labels(topo, objectives[name].labels, labels)
        acc = float((z.argmax(1) == y).float().mean())
        metrics["accuracy" if i == 0 else f"accuracy_{name}"] = acc
    records = [r for r in wire.records if r.phase == "inference"]
    data_parties = set(topo.data_parties)
    metrics |= {
        "messages": len(records),
        "bytes_client_to_server": sum(r.nbytes for r in records if r.sender in data_parties),
        "bytes_server_to_client": sum(r.nbytes for r in records if r.receiver in data_parties),
        "logits_sent": any(r.shape[1:] == (z.shape[1],) for r in records for z in logits.values()),
    }
    return InferenceResult(
        metrics,
        samples.ids,
        labels,
        logits,
        Observations.from_captures(wire.captures),
        wire,
        class_names=tuple(data.class_names),
    )


def _csv(result: InferenceResult) -> str:
    """``id, label, prediction, score_<class>...`` for the first objective (then, with several
    tasks, ``prediction_<task>`` for the others)."""
    names = list(result.logits)
    first = result.logits[names[0]]
    classes = list(result.class_names) if len(result.class_names) == first.shape[1] else None
    classes = classes or [str(c) for c in range(first.shape[1])]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        ["id", "label", "prediction", *(f"score_{c}" for c in classes)]
        + [f"prediction_{n}" for n in names[1:]]
    )
    scores = first.softmax(1)
    preds = {n: z.argmax(1) for n, z in result.logits.items()}
    for i in range(len(result.ids)):
        label = "" if result.labels is None else int(result.labels[i])
        row = [int(result.ids[i]), label, int(preds[names[0]][i])]
        row += [f"{float(s):.6g}" for s in scores[i]]
        row += [int(preds[n][i]) for n in names[1:]]
        writer.writerow(row)
    return buf.getvalue()


__all__ = ["SPLITS", "InferenceResult", "infer", "load_run_config", "serve"]
