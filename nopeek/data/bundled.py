"""The data sets nopeek ships or fetches, each registered with its default model.

Bundled (no data root): ``digits`` (8x8 images) and ``breast-cancer`` (30 tabular features), split
stratified 0.6 train / 0.2 aux / 0.2 test; ``digits-x10``: digits with ten times the training
images (each joined by nine seeded shifted copies), for runs with hundreds of clients.
torchvision (need ``data_root``): ``mnist``, ``fashion-mnist``, ``cifar10``; their train/test
are torchvision's, and aux is a stratified 10% carved out of torchvision's train set. All
randomness derives from the ``seed`` argument.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from sklearn.datasets import load_breast_cancer, load_digits
from torch import Tensor

from nopeek.data.sources import DATASETS, DataSource
from nopeek.data.splits import Dataset, Split, check_finite, finish, split_bundled, stratified_take
from nopeek.data.vision import VISION_SPECS, read_vision
from nopeek.seeding import generator, stream_seed

VISION_AUX_FRACTION = 0.1  # torchvision data sets: share of torchvision's train set
DEFAULT_MODELS = {
    "digits": "digits-cnn",
    "digits-x10": "digits-cnn",
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


AUGMENT_COPIES = 9  # digits-x10: shifted copies of each training image


def shifted_copies(x: Tensor, copies: int, *, seed: int) -> Tensor:
    """``copies`` copies of images ``x`` (N, C, H, W), each shifted by a seeded offset in
    {-1, 0, 1} pixels per axis (zero fill): (copies * N, C, H, W), copy-major.

    >>> shifted_copies(torch.ones(2, 1, 3, 3), 4, seed=0).shape
    torch.Size([8, 1, 3, 3])
    """
    gen = generator(seed, "data.augment")
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    offsets = torch.randint(-1, 2, (copies * n, 2), generator=gen)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1)).repeat(copies, 1, 1, 1)
    out = torch.empty(copies * n, *x.shape[1:], dtype=x.dtype)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            rows = ((offsets[:, 0] == dy) & (offsets[:, 1] == dx)).nonzero().flatten()
            out[rows] = padded[rows, :, 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]
    return out


def _load_digits_x10(**kw: Any) -> Dataset:
    """digits whose train split holds each training image and :data:`AUGMENT_COPIES` shifted
    copies (labels kept, new ids after the 1797 of digits); test and aux are digits' own."""
    bunch = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    train, test, aux = split_bundled(x, y, kw["seed"])
    n = len(train)
    extra = shifted_copies(train.x, AUGMENT_COPIES, seed=kw["seed"])
    ids = len(y) + torch.arange(AUGMENT_COPIES * n, dtype=torch.int64)
    train = Split(
        torch.cat([train.x, extra]),
        torch.cat([train.y, train.y.repeat(AUGMENT_COPIES)]),
        torch.cat([train.ids, ids]),
    )
    names = tuple(str(c) for c in bunch.target_names)
    return finish(
        "digits-x10",
        (train, test, aux),
        kind="image",
        class_names=names,
        seed=kw["seed"],
        max_train=kw["max_train"],
    )


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


LOADERS = {
    "digits": _load_digits,
    "digits-x10": _load_digits_x10,
    "breast-cancer": _load_breast_cancer,
}
LOADERS |= {name: partial(_load_vision, name) for name in VISION_SPECS}
for _name, _load in LOADERS.items():
    DATASETS.register(_name, DataSource(_load, default_model=DEFAULT_MODELS[_name]))
