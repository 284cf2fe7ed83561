"""Readers of the user's data files, ``npz:PATH`` and ``csv:PATH``, into a :class:`Table`.

Each reader checks its own format (an npz archive is never unpickled; a CSV needs a header, a
``target`` column and numeric features) and raises a one-line ``DataError`` naming the file and
the fix; :mod:`nopeek.data.user` checks what all formats share and splits the table.
"""

from __future__ import annotations

import csv
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nopeek.data.splits import check_finite
from nopeek.errors import DataError

MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
"""CSV cells (stripped, lower-cased) that mean a missing value."""


@dataclass(frozen=True)
class Table:
    """A file's samples, before splitting.

    x: (N, *input_shape) float32 (images in [0, 1]); y: (N,) int64 in [0, len(class_names)),
    or -1 in every row of a file read without labels (then ``class_names`` is empty);
    ids: (N,) int64 sample ids.
    """

    x: Tensor
    y: Tensor
    ids: Tensor
    kind: str  # "image" or "tabular"
    class_names: tuple[str, ...]


def label_classes(labels: np.ndarray, where: str) -> tuple[Tensor, tuple[str, ...]]:
    """Labels (N,) (integers or strings) -> class indices in sorted order, and the class names.

    Strings that all spell integers are sorted as numbers ("2" before "10").
    """
    if labels.dtype.kind in "US" and all(re.fullmatch(r"[+-]?\d+", s) for s in labels.astype(str)):
        labels = labels.astype(np.int64)
    elif labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
            raise DataError(
                f"{where} holds non-integer or non-finite numbers; labels must be classes "
                "(integers or strings), nopeek does not do regression"
            )
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "iubUS":
        raise DataError(f"{where} has dtype {labels.dtype}; save the labels as integers or strings")
    values, y = np.unique(labels, return_inverse=True)
    names = tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist())
    return torch.from_numpy(y.reshape(-1).astype(np.int64)), names


# --- npz ----------------------------------------------------------------------------------


def _unlabelled(n: int) -> tuple[Tensor, tuple[str, ...]]:
    """Labels and class names of ``n`` samples without labels: -1 each, no classes."""
    return torch.full((n,), -1, dtype=torch.int64), ()


def read_npz(path: Path, *, labels: bool = True, **_: Any) -> Table:
    """``x``, ``y`` and optional ``ids`` of an ``np.savez`` archive (never unpickled); without
    ``labels`` (data to attack, not to train on) ``y`` may be left out."""
    fix = "save it with np.savez(PATH, x=features, y=labels) (ids=... optional)"
    if not zipfile.is_zipfile(path):
        raise DataError(f"npz:{path} is not an npz archive (a zip of .npy arrays); {fix}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            arrays = {k: archive[k] for k in ("x", "y", "ids") if k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        what = "holds Python objects (never unpickled)" if "pickle" in str(exc) else "is corrupt"
        raise DataError(f"npz:{path} {what} ({type(exc).__name__}); {fix}") from None
    missing = [k for k in ("x", "y") if k not in arrays and (labels or k == "x")]
    if missing:
        raise DataError(
            f"npz:{path} has arrays {sorted(keys)} but no {' or '.join(map(repr, missing))}; {fix}"
        )
    x, y = arrays["x"], arrays.get("y")
    if y is not None and (y.ndim != 1 or x.ndim < 1 or len(x) != len(y)):
        raise DataError(
            f"npz:{path}: x has shape {x.shape} but y {y.shape}; give one label per row of x, "
            "y of shape (N,)"
        )
    n = len(x) if x.ndim else 0  # a 0-d x is refused by _npz_x below
    if x.ndim and n == 0:
        raise DataError(f"npz:{path} holds no samples (x has shape {x.shape}); {fix}")
    y_t, names = label_classes(y, f"npz:{path} y") if y is not None else _unlabelled(n)
    ids = _npz_ids(arrays.get("ids"), len(y_t), path)
    return Table(_npz_x(x, path), y_t, ids, "tabular" if x.ndim == 2 else "image", names)


def _npz_x(x: np.ndarray, path: Path) -> Tensor:
    """x as float32: (N, D) as is; images (N, H, W) -> (N, 1, H, W), scaled to [0, 1]."""
    if x.dtype.kind not in "biuf":
        raise DataError(f"npz:{path} x has dtype {x.dtype}; save numeric features")
    if x.ndim not in (2, 3, 4):
        raise DataError(
            f"npz:{path} x has shape {x.shape}; give (N, D) features or (N, H, W) / (N, C, H, W) "
            "images"
        )
    if x.ndim == 4 and x.shape[1] > 4 and x.shape[-1] in (1, 3, 4):
        raise DataError(
            f"npz:{path} x has shape {x.shape}, which looks channels-last; save images as "
            "(N, C, H, W), e.g. x.transpose(0, 3, 1, 2)"
        )
    out = torch.from_numpy(x.astype(np.float32))
    if x.ndim == 3:
        out = out.unsqueeze(1)
    check_finite(out, what=f"npz:{path} x")
    if x.ndim > 2 and x.dtype == np.uint8:
        return out / 255.0
    if x.ndim > 2 and len(out) and (float(out.min()) < 0 or float(out.max()) > 1):
        raise DataError(
            f"npz:{path} images span [{float(out.min()):.4g}, {float(out.max()):.4g}]; save "
            "them as uint8 0..255 or floats in [0, 1]"
        )
    return out


def _npz_ids(ids: np.ndarray | None, n: int, path: Path) -> Tensor:
    if ids is None:
        return torch.arange(n, dtype=torch.int64)
    if ids.shape != (n,) or ids.dtype.kind not in "iu" or (n and ids.min() < 0):
        raise DataError(
            f"npz:{path} ids has shape {ids.shape} and dtype {ids.dtype}; give ({n},) unique "
            "non-negative integers, or leave ids out"
        )
    return torch.from_numpy(ids.astype(np.int64))


# --- csv ----------------------------------------------------------------------------------


def read_csv(path: Path, *, target: str | None, labels: bool = True, **_: Any) -> Table:
    """A header row, then one row per sample: the ``target`` column's labels, numeric features.
    Without ``labels`` (data to attack) and no ``target``, every column is a feature."""
    header, rows = csv_rows(path)
    if target is None and not labels:
        return _unlabelled_csv(path, header, rows)
    if target is None or target not in header:
        given = "needs --target COLUMN" if target is None else f"has no column --target {target!r}"
        raise DataError(
            f"csv:{path} {given} (the label column); the columns are: {', '.join(header)}"
        )
    t = header.index(target)
    features = [j for j in range(len(header)) if j != t]
    if not features:
        raise DataError(f"csv:{path} has only the target column {target!r}; add feature columns")
    x = np.empty((len(rows), len(features)), dtype=np.float32)
    for i, (line, row) in enumerate(rows):
        for j, col in enumerate(features):
            x[i, j] = parse_number(row[col], path, i, line, header[col])
        if row[t].lower() in MISSING:
            missing_cell(path, i, line, target)
    cells = np.array([row[t] for _, row in rows])
    y, names = label_classes(cells, f"csv:{path} column {target!r}")
    ids = torch.arange(len(rows), dtype=torch.int64)
    return Table(torch.from_numpy(x), y, ids, "tabular", names)


def _unlabelled_csv(path: Path, header: list[str], rows: list[tuple[int, list[str]]]) -> Table:
    """Every column of the CSV as a numeric feature, no labels."""
    x = np.empty((len(rows), len(header)), dtype=np.float32)
    for i, (line, row) in enumerate(rows):
        for j, cell in enumerate(row):
            x[i, j] = parse_number(cell, path, i, line, header[j])
    y, names = _unlabelled(len(rows))
    return Table(
        torch.from_numpy(x), y, torch.arange(len(rows), dtype=torch.int64), "tabular", names
    )


def csv_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the (file line, stripped cells) of each non-blank row."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            rows = [(reader.line_num, [c.strip() for c in row]) for row in reader if row]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(
            f"csv:{path} is not readable as UTF-8 CSV ({type(exc).__name__}); save it as CSV text"
        ) from None
    if not header or not rows:
        missing = "rows" if header else "header"
        raise DataError(
            f"csv:{path} has no {missing}; give a header row of column names, then one row per "
            "sample"
        )
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise DataError(f"csv:{path} repeats the column name(s) {twice}; give unique names")
    for line, row in rows:
        if len(row) != len(header):
            raise DataError(
                f"csv:{path} line {line} has {len(row)} fields but the header has {len(header)}; "
                "fix that row"
            )
    return header, rows


def parse_number(cell: str, path: Path, row: int, line: int, column: str) -> float:
    if cell.lower() in MISSING:
        missing_cell(path, row, line, column)
    try:
        return float(cell)
    except ValueError:
        raise DataError(
            f"csv:{path} column {column!r} is not numeric (row {row}, line {line}: {cell!r}); "
            "drop the column or encode it as numbers"
        ) from None


def missing_cell(path: Path, row: int, line: int, column: str) -> None:
    raise DataError(
        f"csv:{path} has a missing value at row {row} (line {line}), column {column!r}; fill it "
        "in (impute) or drop the row"
    )
