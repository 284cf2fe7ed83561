"""The data sets nopeek ships or fetches, each registered with its default model.

Bundled (no data root): ``digits`` (8x8 images) and ``breast-cancer`` (30 tabular features), split
stratified 0.6 train / 0.2 aux / 0.2 test. torchvision (need ``data_root``): ``mnist``,
``fashion-mnist``, ``cifar10``; their train/test are torchvision's, and aux is a stratified 10%
carved out of torchvision's train set. All randomness derives from the ``seed`` argument.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from sklearn.datasets import load_breast_cancer, load_digits

from nopeek.data.sources import DATASETS, DataSource
from nopeek.data.splits import Dataset, Split, check_finite, finish, split_bundled, stratified_take
from nopeek.data.vision import VISION_SPECS, read_vision
from nopeek.seeding import stream_seed

VISION_AUX_FRACTION = 0.1  # torchvision data sets: share of torchvision's train set
DEFAULT_MODELS = {
    "digits": "digits-cnn",
    "breast-cancer": "mlp",
    "mnist": "lenet",
    "fashion-mnist": "lenet",
    "cifar10": "resnet18",
}
"""The model each built-in data set trains without ``--model`` (registered with it below)."""


def _load_bundled(
    name: str, bunch: Any, shape: tuple[int, ...], scale: float, kind: str, **kw: Any
) -> Dataset:
    """Shared part of the sklearn-bundled loaders."""
    x = torch.as_tensor(bunch.data, dtype=torch.float32).reshape(-1, *shape) / scale
    check_finite(x, what=f"{name} x")
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    names = tuple(str(c) for c in bunch.target_names)
    splits = split_bundled(x, y, kw["seed"])
    return finish(
        name, splits, kind=kind, class_names=names, seed=kw["seed"], max_train=kw["max_train"]
    )


def _load_digits(**kw: Any) -> Dataset:
    """sklearn's 1797 8x8 digit images, values 0..16 scaled to [0, 1]; shape (1, 8, 8)."""
    return _load_bundled("digits", load_digits(), (1, 8, 8), 16.0, "image", **kw)


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
    return finish(
        name, splits, kind="image", class_names=names, seed=kw["seed"], max_train=kw["max_train"]
    )


LOADERS = {"digits": _load_digits, "breast-cancer": _load_breast_cancer}
LOADERS |= {name: partial(_load_vision, name) for name in VISION_SPECS}
for _name, _load in LOADERS.items():
    DATASETS.register(_name, DataSource(_load, default_model=DEFAULT_MODELS[_name]))
