"""Load a data set by name (:func:`load_dataset`): a registered one or a ``FORMAT:PATH`` file,
then the label options (one-vs-rest, shuffled train labels); :func:`dataset_summary` for logs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nopeek.data.sources import DATASETS, find_loader
from nopeek.data.splits import Dataset
from nopeek.errors import ConfigError, DataError
from nopeek.seeding import generator


def _check_max_train(max_train: int | None) -> None:
    if max_train is not None and (isinstance(max_train, bool) or max_train < 1):
        raise ConfigError(
            f"max_train must be a positive integer, got {max_train!r}; pass e.g. 1000"
        )


def _check_labels(ds: Dataset) -> None:
    """Raise ``DataError`` when a label lies outside [0, n_classes)."""
    for part in ("train", "test", "aux"):
        y = getattr(ds, part).y
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= ds.n_classes):
            raise DataError(
                f"{ds.name} {part} labels span [{int(y.min())}, {int(y.max())}] but there are "
                f"{ds.n_classes} classes; fix the label files"
            )


def _one_vs_rest(ds: Dataset, k: int) -> Dataset:
    """Relabel to 1 for class ``k`` and 0 for every other class."""
    if isinstance(k, bool) or not 0 <= k < ds.n_classes:
        raise ConfigError(
            f"one_vs_rest={k!r} is not a class of {ds.name}; choose 0..{ds.n_classes - 1}"
        )
    parts = {p: getattr(ds, p) for p in ("train", "test", "aux")}
    parts = {p: replace(s, y=(s.y == k).to(torch.int64)) for p, s in parts.items()}
    name = ds.class_names[k]
    return replace(ds, **parts, n_classes=2, class_names=(f"not {name}", name))


def _shuffle_train_labels(ds: Dataset, seed: int) -> Dataset:
    """Permute the train labels with ``seed`` (test/aux untouched): a no-signal control."""
    gen = generator(seed, "data.shuffle-labels")
    perm = torch.randperm(len(ds.train), generator=gen)
    return replace(ds, train=replace(ds.train, y=ds.train.y[perm]))


def load_dataset(
    name: str,
    *,
    seed: int = 0,
    data_root: str | Path | None = None,
    download: bool = False,
    one_vs_rest: int | None = None,
    shuffle_labels: bool = False,
    max_train: int | None = None,
    **options: Any,
) -> Dataset:
    """Load data set ``name`` (see ``DATASETS.names()``, or ``FORMATS``: ``npz:PATH``, ...) split
    into train/test/aux on CPU.

    ``one_vs_rest=K`` makes it binary (class K -> 1, others -> 0); ``shuffle_labels`` then permutes
    the train labels; ``max_train`` keeps a stratified seeded subset of the train split.
    ``options`` (``target``, ``image_size``, ``class_names``; None = not given) go to a file
    format's loader (see :mod:`nopeek.data.user`); a registered data set takes none.
    """
    loader = find_loader(name)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}; pass e.g. --seed 0")
    _check_max_train(max_train)
    options = {k: v for k, v in options.items() if v is not None}
    if options and name in DATASETS:
        raise ConfigError(
            f"{', '.join(sorted(options))} apply to data files (csv:PATH, imagefolder:PATH), "
            f"not to {name}; drop them"
        )
    ds = loader(seed=seed, data_root=data_root, download=download, max_train=max_train, **options)
    _check_labels(ds)
    if one_vs_rest is not None:
        ds = _one_vs_rest(ds, one_vs_rest)
    if shuffle_labels:
        ds = _shuffle_train_labels(ds, seed)
    return ds


def _counts(y: Tensor, n_classes: int) -> list[int]:
    return torch.bincount(y, minlength=n_classes).tolist()


def dataset_summary(ds: Dataset) -> dict[str, Any]:
    """JSON-ready facts for logs: sizes, shape, classes, class counts, positive rate if binary."""
    parts = {p: getattr(ds, p) for p in ("train", "test", "aux")}
    out: dict[str, Any] = {
        "name": ds.name,
        "kind": ds.kind,
        "input_shape": list(ds.input_shape),
        "n_classes": ds.n_classes,
        "class_names": list(ds.class_names),
        "data_range": ds.data_range,
        **{f"n_{p}": len(s) for p, s in parts.items()},
        "train_class_counts": _counts(ds.train.y, ds.n_classes),
    }
    if ds.n_classes == 2:
        out["positive_rate"] = {p: float(s.y.float().mean()) for p, s in parts.items() if len(s)}
    return out
