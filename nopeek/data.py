"""Data sets for split-learning leakage experiments: train/test splits plus an attacker's aux split.

Every data set comes as three disjoint :class:`Split` objects on CPU. ``aux`` is the attacker's
own data (same distribution, never seen in training). Sample ids are unique across the three
splits of a data set, so membership and reconstruction results can be traced back to samples.

Bundled (no data root): ``digits`` (8x8 images) and ``breast-cancer`` (30 tabular features), split
stratified 0.6 train / 0.2 aux / 0.2 test. torchvision (need ``data_root``): ``mnist``,
``fashion-mnist``, ``cifar10``; their train/test are torchvision's, and aux is a stratified 10%
carved out of torchvision's train set. All randomness derives from the ``seed`` argument.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor

from nopeek._vision_data import VISION_SPECS, read_vision
from nopeek.errors import ConfigError, DataError
from nopeek.plugins import ENTRY_GROUPS
from nopeek.registry import Registry
from nopeek.seeding import generator, stream_seed

TEST_FRACTION = 0.2  # bundled data sets: share of all samples
AUX_FRACTION = 0.2  # bundled data sets: share of all samples
VISION_AUX_FRACTION = 0.1  # torchvision data sets: share of torchvision's train set


@dataclass(frozen=True)
class Split:
    """One split of a data set, on CPU.

    x: (N, *input_shape) float32, images in [0, 1], tabular standardized.
    y: (N,) int64 class labels in [0, n_classes).
    ids: (N,) int64 sample ids, unique across the train/test/aux splits of a data set.
    """

    x: Tensor
    y: Tensor
    ids: Tensor

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        if self.y.shape != (n,) or self.ids.shape != (n,):
            raise DataError(
                f"split has x with {n} rows but y {tuple(self.y.shape)} and ids "
                f"{tuple(self.ids.shape)}; give x, y and ids the same number of rows"
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: Tensor) -> Split:
        """The rows at positions ``index`` ((K,) int64, or an (N,) bool mask)."""
        return Split(x=self.x[index], y=self.y[index], ids=self.ids[index])

    def holds(self, key: str) -> bool:
        """Whether the split has data key ``key`` (``x`` and ``y``)."""
        return key in ("x", "y")

    def batch(self, index: Tensor | slice) -> dict[str, Tensor]:
        """The rows at ``index`` as a batch: ``x``, ``y`` and ``ids``."""
        return {"x": self.x[index], "y": self.y[index], "ids": self.ids[index]}


@dataclass(frozen=True)
class Dataset:
    """A data set: three disjoint splits plus what models and metrics need to know about it."""

    name: str
    train: Split
    test: Split
    aux: Split  # the attacker's own data, disjoint from train and test
    input_shape: tuple[int, ...]  # e.g. (1, 8, 8) or (30,)
    n_classes: int
    kind: str  # "image" or "tabular"
    data_range: float  # max - min of a valid input (1.0 for images); tabular: range of train x
    class_names: tuple[str, ...]
    # tabular: the train-fitted standardization, x = (raw - feature_mean) / feature_std, (D,)
    # each; None where the features are as the file holds them (images, audited segments)
    feature_mean: Tensor | None = None
    feature_std: Tensor | None = None

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype of the model's input (float32 for every loader)."""
        return self.train.x.dtype

    def original_units(self, x: Tensor) -> Tensor:
        """Rows ``x`` (N, *input_shape) as the model takes them -> the data's own units.

        Undoes the standardization (``x * feature_std + feature_mean``, float64); ``x``
        unchanged (as float64) where none was applied.
        """
        if self.feature_mean is None or self.feature_std is None:
            return x.double()
        return x.double() * self.feature_std.double() + self.feature_mean.double()


Loader = Callable[..., Dataset]  # (*, seed, data_root, download, max_train) -> Dataset


def _check_loader(name: str, entry: object) -> None:
    if not callable(entry):
        raise TypeError(f"{entry!r} is not a loader (*, seed, data_root, download, max_train)")


# built-ins below; installed packages add theirs in the entry-point group nopeek.datasets
DATASETS: Registry[Loader] = Registry(
    "dataset", plugins=ENTRY_GROUPS["dataset"], check=_check_loader
)
# ``FORMAT:PATH`` specs (the user's own files, see nopeek.user_data): FORMAT -> loader taking the
# path first and, besides a Loader's keywords, the options target, image_size and class_names
FORMATS: Registry[Callable[..., Dataset]] = Registry("data file format")


def find_loader(name: str) -> Loader:
    """The loader of a registered data set ``name``, or of a ``FORMAT:PATH`` spec (a miss lists
    both kinds)."""
    if name in DATASETS:
        return DATASETS.get(name)
    fmt, sep, path = name.partition(":")
    if sep and fmt in FORMATS:
        return partial(FORMATS.get(fmt), path)
    files = ", ".join(f"{f}:PATH" for f in FORMATS.names())
    valid = ", ".join(DATASETS.names())
    raise ConfigError(f"unknown dataset {name!r}; choose one of: {valid}, or a file: {files}")


def check_finite(x: Tensor, *, what: str) -> None:
    """Raise ``DataError`` naming ``what`` and the count when ``x`` holds NaN or inf."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(bad.sum()) - n_nan
        raise DataError(
            f"{what} contains {n_nan} NaN and {n_inf} inf values; "
            "remove or impute them in the source data"
        )


def stratified_take(y: Tensor, n_take: int, seed: int) -> tuple[Tensor, Tensor]:
    """Split positions of ``y`` ((N,) int64) into ``n_take`` taken and N - n_take kept ones.

    Each class gives its proportional share (largest remainder rounding), so this also works on
    sets too small for sklearn's stratified splitting. Returns two sorted (K,) int64 tensors.
    """
    y_np = y.numpy()
    classes, counts = np.unique(y_np, return_counts=True)
    exact = counts * n_take / len(y_np)
    quota = np.floor(exact).astype(np.int64)
    extra = np.argsort(-(exact - quota), kind="stable")[: n_take - int(quota.sum())]
    quota[extra] += 1
    rng = np.random.default_rng(seed)
    taken = [
        rng.permutation(np.flatnonzero(y_np == c))[:q] for c, q in zip(classes, quota, strict=True)
    ]
    mask = np.zeros(len(y_np), dtype=bool)
    mask[np.concatenate(taken)] = True
    return torch.from_numpy(np.flatnonzero(mask)), torch.from_numpy(np.flatnonzero(~mask))


def _check_max_train(max_train: int | None) -> None:
    if max_train is not None and (isinstance(max_train, bool) or max_train < 1):
        raise ConfigError(
            f"max_train must be a positive integer, got {max_train!r}; pass e.g. 1000"
        )


def _finish(
    name: str,
    splits: tuple[Split, Split, Split],
    *,
    kind: str,
    class_names: tuple[str, ...],
    seed: int,
    max_train: int | None,
) -> Dataset:
    """Apply ``max_train`` and (tabular) train-fitted standardization; build the ``Dataset``."""
    train, test, aux = splits
    if max_train is not None and max_train < len(train):
        taken = stratified_take(train.y, max_train, stream_seed(seed, "data.max-train"))[0]
        train = train.subset(taken)
    mean = std = None
    if kind == "tabular":
        mean = train.x.mean(dim=0)
        std = train.x.std(dim=0, correction=0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        train, test, aux = (replace(s, x=(s.x - mean) / std) for s in (train, test, aux))
    data_range = 1.0 if kind == "image" else float(train.x.max() - train.x.min())
    return Dataset(
        name=name,
        train=train,
        test=test,
        aux=aux,
        input_shape=tuple(train.x.shape[1:]),
        n_classes=len(class_names),
        kind=kind,
        data_range=data_range,
        class_names=class_names,
        feature_mean=mean,
        feature_std=std,
    )


def _split_bundled(x: Tensor, y: Tensor, seed: int) -> tuple[Split, Split, Split]:
    """Stratified, seeded 0.6 train / 0.2 aux / 0.2 test split; ids are row positions."""
    ids = np.arange(len(y), dtype=np.int64)
    rest, test = train_test_split(
        ids,
        test_size=TEST_FRACTION,
        stratify=y.numpy(),
        random_state=stream_seed(seed, "data.test"),
    )
    train, aux = train_test_split(
        rest,
        test_size=AUX_FRACTION / (1.0 - TEST_FRACTION),
        stratify=y.numpy()[rest],
        random_state=stream_seed(seed, "data.aux"),
    )
    whole = Split(x=x, y=y, ids=torch.from_numpy(ids))
    return (
        whole.subset(torch.from_numpy(train)),
        whole.subset(torch.from_numpy(test)),
        whole.subset(torch.from_numpy(aux)),
    )


def _load_bundled(
    name: str, bunch: Any, shape: tuple[int, ...], scale: float, kind: str, **kw: Any
) -> Dataset:
    """Shared part of the sklearn-bundled loaders."""
    x = torch.as_tensor(bunch.data, dtype=torch.float32).reshape(-1, *shape) / scale
    check_finite(x, what=f"{name} x")
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    names = tuple(str(c) for c in bunch.target_names)
    splits = _split_bundled(x, y, kw["seed"])
    return _finish(
        name, splits, kind=kind, class_names=names, seed=kw["seed"], max_train=kw["max_train"]
    )


@DATASETS.decorator("digits")
def _load_digits(**kw: Any) -> Dataset:
    """sklearn's 1797 8x8 digit images, values 0..16 scaled to [0, 1]; shape (1, 8, 8)."""
    return _load_bundled("digits", load_digits(), (1, 8, 8), 16.0, "image", **kw)


@DATASETS.decorator("breast-cancer")
def _load_breast_cancer(**kw: Any) -> Dataset:
    """sklearn's Wisconsin breast cancer table: 569 rows, 30 features, standardized on train."""
    return _load_bundled("breast-cancer", load_breast_cancer(), (30,), 1.0, "tabular", **kw)


def _load_vision(name: str, **kw: Any) -> Dataset:
    """torchvision train/test; aux is a stratified seeded 10% of torchvision's train set."""
    arrays = read_vision(name, kw["data_root"], kw["download"])
    check_finite(arrays.x_train, what=f"{name} train x")
    check_finite(arrays.x_test, what=f"{name} test x")
    n_train = len(arrays.y_train)
    whole = Split(arrays.x_train, arrays.y_train, torch.arange(n_train, dtype=torch.int64))
    n_aux = round(VISION_AUX_FRACTION * n_train)
    aux_idx, train_idx = stratified_take(arrays.y_train, n_aux, stream_seed(kw["seed"], "data.aux"))
    test_ids = torch.arange(n_train, n_train + len(arrays.y_test), dtype=torch.int64)
    test = Split(arrays.x_test, arrays.y_test, test_ids)
    splits = (whole.subset(train_idx), test, whole.subset(aux_idx))
    names = arrays.class_names
    return _finish(
        name, splits, kind="image", class_names=names, seed=kw["seed"], max_train=kw["max_train"]
    )


for _name in VISION_SPECS:
    DATASETS.register(_name, partial(_load_vision, _name))


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
    format's loader (see :mod:`nopeek.user_data`); a registered data set takes none.
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


from nopeek import user_data  # noqa: E402, F401  (registers the FORMATS npz, csv, imagefolder)
