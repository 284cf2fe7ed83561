"""Split inference: a trained run's parties answer predictions through the cut, as in training.

:func:`infer` rebuilds a finished run through :func:`nopeek.training.assemble.restore`, the
path that train, resume and the attacks use too (config, seeded topology, every party's
trained segments from ``checkpoint.pt``, relay clients holding exactly what they held, the
config's hooks set up with their states from the checkpoint: cut noise configured with
``inference=true`` keeps adding noise, its generator continuing where training left it) and
runs the samples through the strategy's prediction path
(:meth:`~nopeek.runtime.plans.Strategy.eval_nodes`, hooks in eval mode) over an in-process
channel. Every message is on the wire log with phase ``inference`` and captured, so
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
from typing import Any

import torch
from torch import Tensor

from nopeek.config import TrainConfig
from nopeek.data import Dataset, Split, load_dataset
from nopeek.errors import ConfigError, DataError
from nopeek.io import atomic_write_bytes, atomic_write_json
from nopeek.observe import Observations
from nopeek.rundir import RunDir
from nopeek.runtime import InProcessRuntime
from nopeek.runtime.channel import WireLog
from nopeek.training.assemble import load_run_config, restore
from nopeek.training.measures import predict_all, task_labels

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
    served = restore(run_dir, config=config, dataset=data)
    wire = served.wire
    wire.at(phase="inference", epoch=config.epochs, step=0)
    logits = predict_all(
        served.runtime,
        samples,
        config.batch_size,
        served.device,
        phase="inference",
        nodes=served.strategy.eval_nodes(),
    )
    result = _result(run_dir, config, served.runtime, samples, logits, wire, split, dataset, data)
    if target is not None:
        with target.writing(overwrite=overwrite) as where:
            atomic_write_bytes(where / "predictions.csv", _csv(result).encode())
            result.observations.save(where / RunDir.OBSERVATIONS)
            atomic_write_json(where / "inference.json", result.metrics)
        result.out = target.path
    return result


def _result(
    run_dir: Path,
    config: TrainConfig,
    runtime: InProcessRuntime,
    samples: Split,
    logits: dict[str, Tensor],
    wire: WireLog,
    split: str,
    spec: str | None,
    data: Dataset,
) -> InferenceResult:
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


__all__ = ["SPLITS", "InferenceResult", "infer", "load_run_config"]
