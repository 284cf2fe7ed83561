"""The records every loader returns: :class:`Split` (x, y, ids on CPU) and :class:`Dataset`
(three disjoint splits plus what models and metrics need), and the helpers that build them the
same way for every source: the stratified seeded split, ``max_train`` and the train-fitted
standardization of tabular features.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor

from nopeek.errors import DataError
from nopeek.seeding import stream_seed

TEST_FRACTION = 0.2  # bundled data sets and files: share of all samples
AUX_FRACTION = 0.2  # bundled data sets and files: share of all samples


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


def finish(
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


def split_bundled(x: Tensor, y: Tensor, seed: int) -> tuple[Split, Split, Split]:
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
