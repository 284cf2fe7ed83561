"""The user's own data: ``npz:PATH``, ``csv:PATH`` (with ``target``) and ``imagefolder:PATH``.

Each file becomes a :class:`~nopeek.data.Dataset` with the same stratified, seeded 0.6 train /
0.2 aux / 0.2 test split as the bundled sets, so every class appears in every split (each class
needs :data:`MIN_PER_CLASS` samples). Tabular features are standardized on the train split;
images are scaled to [0, 1].

- ``npz:PATH``: ``np.savez(PATH, x=..., y=..., ids=...)``. ``x`` (N, D) is tabular, (N, H, W) or
  (N, C, H, W) an image set (uint8 0..255 or floats in [0, 1]); ``y`` (N,) labels (integers or
  strings); ``ids`` (N,) optional unique non-negative integer sample ids (default: row numbers).
- ``csv:PATH`` with ``target=COLUMN``: a header row, one row per sample; every other column is a
  numeric feature. Sample ids are the data row numbers (0-based).
- ``imagefolder:PATH``: torchvision's ``ImageFolder`` layout, ``PATH/<class>/<image>`` (any depth
  below the class folder; names starting with ``.`` are skipped). Images must share one mode and
  size unless ``image_size=S`` resizes them all to SxS (and converts them to RGB if any is in
  colour). Sample ids are positions in the sorted file list.

A file that is only attacked (``nopeek audit --victims``) is read whole instead
(:func:`load_whole`): no split, no minimum class size, labels optional, features unscaled.

Labels become classes 0..K-1 in sorted order (numerically when they all are integers), and the
original labels are the class names. Every problem with a file is a one-line ``DataError`` that
names the place and the fix, raised before anything is written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nopeek.data.files import MISSING as MISSING  # re-exported: the CSV cells read as missing
from nopeek.data.files import Table, read_csv, read_npz
from nopeek.data.images import common_format, list_images, read_pixels
from nopeek.data.party import load_keyed
from nopeek.data.sources import DATASETS, FORMATS, DataSource, file_model
from nopeek.data.splits import TEST_FRACTION, Dataset, Split, check_finite, finish, split_bundled
from nopeek.errors import ConfigError, DataError

MIN_PER_CLASS = 5
"""Samples a class needs so that the stratified split puts it in train, test and aux alike."""
MIN_TEST = 4
"""Test samples a data file must give (the unbiased dCor of the cut needs 4)."""
_MIN_SAMPLES = next(n for n in range(1, 1000) if math.ceil(TEST_FRACTION * n) >= MIN_TEST)


@dataclass(frozen=True)
class Described:
    """What a config needs to know of a data file before training: its kind, the shape of one
    sample, its class names, and the reference model that fits it."""

    kind: str
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]

    @property
    def default_model(self) -> str:
        """``mlp`` for features; for images the reference model of their fixed shape, or
        ``cnn`` (any size)."""
        return file_model(self.kind, self.input_shape)


def describe(
    name: str, *, target: str | None = None, image_size: int | None = None
) -> Described | None:
    """The :class:`Described` of the data file ``name`` (``FORMAT:PATH``), or None when ``name``
    is not a file spec; bad data or options raise here, before a run starts.

    A registered data set given ``target`` or ``image_size`` raises ``ConfigError``.

    >>> describe("digits") is None
    True
    >>> describe("csv:no/such.csv", target="y")
    Traceback (most recent call last):
    ...
    nopeek.errors.DataError: csv:no/such.csv: no such file; check the path (a relative one starts at the current folder)
    """  # noqa: E501
    fmt, _, path = name.partition(":")
    if data_file_format(name) is None:
        if name in DATASETS and (target is not None or image_size is not None):
            raise ConfigError(
                f"--target and --image-size apply to data files (csv:PATH, imagefolder:PATH), "
                f"not to {name}; drop them"
            )
        return None
    _check_options(fmt, target, image_size)
    where = _existing(fmt, path)
    if fmt == "imagefolder":  # the folder listing and image headers, no pixels
        files, classes = list_images(where)
        labels = torch.tensor([label for _, label in files], dtype=torch.int64)
        _check_counts(name, classes, labels)
        mode, size = common_format(where, files, image_size)
        return Described("image", (1 if mode == "L" else 3, size[1], size[0]), classes)
    table = _read(fmt, where, name, target=target, image_size=image_size)
    return Described(table.kind, tuple(table.x.shape[1:]), table.class_names)


def data_file_format(name: str) -> str | None:
    """The format of a data file spec ``FORMAT:PATH`` (``npz``, ``csv``, ``imagefolder``), or
    None for anything else (a registered data set).

    >>> data_file_format("npz:victims.npz"), data_file_format("digits")
    ('npz', None)
    """
    fmt, sep, _ = name.partition(":")
    return fmt if sep and name not in DATASETS and fmt in FORMATS else None


def load_whole(name: str, *, target: str | None = None, image_size: int | None = None) -> Dataset:
    """Every sample of the data file ``name``, unsplit: data to attack, not to train on.

    The samples, in file order, are the ``test`` split of the returned data set (``train`` and
    ``aux`` are empty). Labels are optional (an npz without ``y``, a csv without ``target``:
    every label is -1 and there are no class names), no class needs a minimum count, and
    features stay as the file holds them (not standardized: the file holds what the client's
    segment takes). Bad files are refused in one line as for training.
    """
    fmt = data_file_format(name)
    if fmt is None:
        raise ConfigError(
            f"{name!r} is not a data file; give npz:PATH, csv:PATH or imagefolder:PATH"
        )
    _check_options(fmt, target, image_size)
    where = _existing(fmt, name.partition(":")[2])
    table = _READERS[fmt](where, target=target, image_size=image_size, labels=False)
    check_finite(table.x, what=f"{name} x")
    _check_ids(name, table.ids)
    if not len(table.ids):
        raise DataError(f"{name} holds no samples; give at least one")
    whole = Split(table.x, table.y, table.ids)
    none = whole.subset(torch.zeros(0, dtype=torch.long))
    spread = float(table.x.max() - table.x.min())
    return Dataset(
        name=name,
        train=none,
        test=whole,
        aux=none,
        input_shape=tuple(table.x.shape[1:]),
        n_classes=len(table.class_names),
        kind=table.kind,
        data_range=1.0 if table.kind == "image" or spread == 0 else spread,
        class_names=table.class_names,
    )


def _load(
    fmt: str,
    path: str,
    *,
    seed: int,
    max_train: int | None,
    target: str | None = None,
    image_size: int | None = None,
    class_names: list[str] | None = None,
    id_column: str | None = None,
    columns: str | None = None,
    **_: Any,
) -> Dataset:
    """A :data:`~nopeek.data.FORMATS` loader: read, check, split and standardize one file.

    ``class_names`` (a saved run's) must match the file's classes, so that a run is never
    rebuilt on data whose labels mean something else. With ``id_column`` a csv file's rows
    are keyed by that column (:func:`nopeek.data.party.load_keyed`).
    """
    _check_options(fmt, target, image_size)
    if id_column is not None:
        if fmt != "csv":
            raise ConfigError(f"--id-column keys the rows of a csv:PATH file, not {fmt}:PATH")
        return load_keyed(
            path, id_column=id_column, target=target, seed=seed, max_train=max_train,
            columns=columns,
        )  # fmt: skip
    name = f"{fmt}:{path}"
    table = _read(fmt, _existing(fmt, path), name, target=target, image_size=image_size)
    if class_names is not None and list(class_names) != list(table.class_names):
        raise DataError(
            f"{name} now has classes {_short(table.class_names)}, but the run was trained on "
            f"{_short(class_names)}; restore the data or train anew with --overwrite"
        )
    positions = split_bundled(table.x, table.y, seed)  # ids: row positions, mapped back below
    train, test, aux = (replace(s, ids=table.ids[s.ids]) for s in positions)
    names = table.class_names
    splits = (train, test, aux)
    return finish(name, splits, kind=table.kind, class_names=names, seed=seed, max_train=max_train)


def _read(fmt: str, where: Path, name: str, **options: Any) -> Table:
    """The file's :class:`Table`, checked: finite x, classes big enough to split, unique ids."""
    table = _READERS[fmt](where, **options)
    check_finite(table.x, what=f"{name} x")
    _check_counts(name, table.class_names, table.y)
    _check_ids(name, table.ids)
    return table


def _check_ids(name: str, ids: Tensor) -> None:
    """Every sample id once."""
    unique, repeats = torch.unique(ids, return_counts=True)
    if len(unique) < len(ids):
        first = int(unique[repeats > 1][0])
        raise DataError(
            f"{name}: sample id {first} appears {int(repeats[repeats > 1][0])} times in ids; "
            "give every sample a unique id"
        )


def _check_options(fmt: str, target: str | None, image_size: int | None) -> None:
    if target is not None and fmt != "csv":
        raise ConfigError(
            f"--target names the label column of a csv:PATH data set; {fmt}:PATH holds its "
            "labels itself, so drop --target"
        )
    if image_size is not None and fmt != "imagefolder":
        raise ConfigError(f"--image-size resizes imagefolder:PATH images; drop it for {fmt}:PATH")
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 2
    ):
        raise ConfigError(f"--image-size must be an integer >= 2, got {image_size!r}; e.g. 32")


def _existing(fmt: str, path: str) -> Path:
    """``path`` (``~`` expanded), refused in one line when missing or of the wrong type."""
    where = Path(path).expanduser()
    folder = fmt == "imagefolder"
    if not path or not where.exists():
        thing = "folder" if folder else "file"
        raise DataError(
            f"{fmt}:{path}: no such {thing}; check the path (a relative one starts at the "
            "current folder)"
        )
    if folder and not where.is_dir():
        raise DataError(f"imagefolder:{path} is not a folder; give the folder of class folders")
    if not folder and not where.is_file():
        raise DataError(f"{fmt}:{path} is not a file; give the path of the .{fmt} file")
    return where


def _check_counts(name: str, names: tuple[str, ...], y: Tensor) -> None:
    """At least 2 classes, :data:`MIN_PER_CLASS` samples in each, :data:`MIN_TEST` test ones."""
    if len(names) < 2:
        raise DataError(
            f"{name} has a single class {names[0]!r}; a classifier needs at least 2, fix the labels"
        )
    counts = torch.bincount(y, minlength=len(names)).tolist()
    for label, count in zip(names, counts, strict=True):
        if count < MIN_PER_CLASS:
            raise DataError(
                f"{name}: class {label!r} has {count} sample(s), too few to split; every class "
                f"needs at least {MIN_PER_CLASS} (for train, test and aux): add samples or drop "
                "the class"
            )
    n_test = math.ceil(TEST_FRACTION * len(y))  # as sklearn's train_test_split counts
    if n_test < MIN_TEST:
        raise DataError(
            f"{name} has {len(y)} samples, so {n_test} test samples, too few to measure leakage "
            f"(dCor needs {MIN_TEST}); give at least {_MIN_SAMPLES} samples"
        )


def _short(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:8])
    return f"[{shown}{', ...' if len(names) > 8 else ''}] ({len(names)})"


def _read_images(path: Path, *, image_size: int | None, **_: Any) -> Table:
    """Every image of ``PATH/<class>/...`` as (N, C, H, W) in [0, 1]; classes sorted by name."""
    files, classes = list_images(path)
    x = read_pixels(files, *common_format(path, files, image_size))
    y = torch.tensor([label for _, label in files], dtype=torch.int64)
    return Table(x, y, torch.arange(len(files)), "image", classes)


_READERS: dict[str, Callable[..., Table]] = {
    "npz": read_npz,
    "csv": read_csv,
    "imagefolder": _read_images,
}
for _fmt in _READERS:  # their default model: file_model of each file's kind and shape
    FORMATS.register(_fmt, DataSource(partial(_load, _fmt)))
