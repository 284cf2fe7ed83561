"""Scoring an attack's output against ground truth looked up by sample id, and writing it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nopeek.attacks.base import AttackInputs, LabelScores, Reconstruction
from nopeek.attacks.leak import Columns
from nopeek.attacks.metrics import (
    baseline_reconstruction,
    label_chance,
    label_leak,
    label_leak_of,
    label_report,
    reconstruction_report,
)
from nopeek.attacks.plots import save_reconstruction_grid
from nopeek.data import Dataset
from nopeek.errors import CheckpointError, ThreatModelError
from nopeek.io import atomic_write_json


def truth(dataset: Dataset, ids: Tensor) -> tuple[Tensor, Tensor]:
    """Raw inputs (M, *input_shape) and labels (M,) of samples ``ids`` (M,), from any split.

    Sample ids are unique across train, test and aux; labels are the ones trained on.
    """
    ids = ids.detach().cpu().long()
    x = torch.zeros((len(ids), *dataset.input_shape), dtype=dataset.test.x.dtype)
    y, found = torch.zeros(len(ids), dtype=torch.long), torch.zeros(len(ids), dtype=torch.bool)
    for part in (p for p in (dataset.train, dataset.test, dataset.aux) if len(p)):
        order = torch.argsort(part.ids)
        rows = order[torch.searchsorted(part.ids[order], ids).clamp_max(len(part) - 1)]
        hit = part.ids[rows] == ids
        x[hit], y[hit], found = part.x[rows[hit]], part.y[rows[hit]], found | hit
    if not bool(found.all()):
        raise CheckpointError(
            "observations name sample ids that are not in the data set; the data changed "
            "since training: retrain the run"
        )
    return x, y


def columns_of(dataset: Dataset) -> Columns | None:
    """How tabular scoring reads ``dataset``'s features (None for images): its standardization,
    and ranges and categorical levels from the training rows (from every other row where there
    are none, as in an audit)."""
    if dataset.kind == "image":
        return None
    parts = [dataset.train] if len(dataset.train) else [dataset.test, dataset.aux]
    rows = torch.cat([p.x for p in parts])
    return Columns.of(rows, mean=dataset.feature_mean, std=dataset.feature_std)


def score(
    output: Reconstruction | LabelScores, dataset: Dataset, *, seed: int = 0
) -> dict[str, Any]:
    """Metrics of ``output`` against the ground truth of the samples it names, with ``leak``.

    Reconstructions: :func:`~nopeek.attacks.metrics.reconstruction_report` against the mean of
    the aux inputs. Label attacks: :func:`~nopeek.attacks.metrics.label_report` (``auc`` as
    the attack names the classes, per epoch), :func:`~nopeek.attacks.metrics.label_leak` (the
    folded AUCs, per epoch and at the worst epoch), the chance baseline
    ``chance_auc_folded_max`` (:func:`~nopeek.attacks.metrics.label_chance`, its permutations
    drawn from ``seed``) and ``leak`` between the two.
    """
    if isinstance(output, LabelScores):
        ys = {e: truth(dataset, ids)[1] for e, ids in output.ids.items()}
        perm = bool(output.extra.get("classes_up_to_permutation", False))
        kw = {"n_classes": dataset.n_classes, "up_to_permutation": perm}
        report = label_report(ys, output.scores, output.predicted, **kw)
        folded = label_leak(report["auc_per_epoch"], report["epochs"], binary=kw["n_classes"] == 2)
        chance = label_chance(
            ys, output.scores, output.ids, seed=seed, predicted=output.predicted, **kw
        )
        leak = label_leak_of(folded["auc_folded_max"], chance)
        return report | folded | {"chance_auc_folded_max": chance, "leak": leak}
    x = truth(dataset, output.ids)[0]
    baseline = baseline_reconstruction(dataset.aux.x, len(x))
    x_hat = output.x_hat.detach().float().cpu()
    report = reconstruction_report(
        x, x_hat, baseline, data_range=dataset.data_range, columns=columns_of(dataset)
    )
    return {**report, "n_samples": len(x)}


def check_ids(name: str, output: Reconstruction | LabelScores, inputs: AttackInputs) -> None:
    """An attack may only answer for samples it observed, each once (per epoch for labels)."""
    seen = (inputs.activations, inputs.gradients, inputs.sent_activations, inputs.predictions)
    granted = torch.cat([torch.zeros(0, dtype=torch.long)] + [o.ids for o in seen if o is not None])
    if inputs.own_train_inputs is not None:  # model completion labels its own training rows
        granted = torch.cat([granted, inputs.own_train_inputs.ids.long()])
    parts = output.ids.values() if isinstance(output, LabelScores) else [output.ids]
    for ids in parts:
        ids = ids.detach().cpu()
        if len(torch.unique(ids)) != len(ids) or not bool(torch.isin(ids, granted).all()):
            raise ThreatModelError(
                f"attack {name} returned sample ids it did not observe (or repeated ones); "
                "return one output per observed sample id"
            )


def write_result(stem: Path, result: Any, dataset: Dataset) -> None:
    """``<stem>.json`` and, for image reconstructions, ``<stem>.png``."""
    rec = result.output
    if isinstance(rec, Reconstruction) and result.ssim is not None:
        title = f"{result.attack} at cut {result.cut}: SSIM {result.ssim:.3f} "
        title += f"(baseline {result.baseline_ssim:.3f})"
        x, x_hat = truth(dataset, rec.ids)[0], rec.x_hat.detach().float().cpu()
        png = stem.with_name(stem.name + ".png")
        save_reconstruction_grid(png, x, x_hat, data_range=dataset.data_range, title=title)
    atomic_write_json(stem.with_name(stem.name + ".json"), result.to_json())
