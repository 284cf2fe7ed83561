"""One party's own CSV files, by sample id: the features it holds, or the labels.

Used where each party reads only its own files (``--id-column``): a row's sample id is the
value of the id column (any text: ``P0042``, ``17``), which the parties align on before training
(:mod:`nopeek.runtime.align`). Every problem is a one-line ``DataError`` naming the file, the
place and the fix, raised before the party meets anyone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from nopeek.data.files import MISSING, csv_rows, missing_cell, parse_number
from nopeek.errors import ConfigError, DataError


@dataclass(frozen=True)
class KeyedRows:
    """What a party read of its own files, before alignment, rows in file order.

    ids: the unique sample ids; x: (N, D) float32 features, or None (a party holding only
    labels); labels: (N,) the label cells as text, or None (a party holding only features);
    columns: the names of x's columns.
    """

    ids: tuple[str, ...]
    x: Tensor | None = None
    labels: np.ndarray | None = None
    columns: tuple[str, ...] = ()

    def rows_of(self, ids: Sequence[str]) -> Tensor:
        """Positions (K,) int64 of ``ids`` (each one this party holds) in its own rows."""
        where = {sample: row for row, sample in enumerate(self.ids)}
        return torch.tensor([where[i] for i in ids], dtype=torch.int64)

    def with_labels(self, labels: KeyedRows) -> KeyedRows:
        """These features with ``labels`` (the same party's label file) on the ids both hold,
        in this file's order: a join of one party's own files, in its own process."""
        if labels.labels is None:
            raise ValueError("with_labels takes the rows of a label file (read_labels)")
        held = set(labels.ids)
        keep = tuple(i for i in self.ids if i in held)
        x = self.x[self.rows_of(keep)] if self.x is not None else None
        return KeyedRows(keep, x, labels.labels[labels.rows_of(keep).numpy()], self.columns)


def csv_path(spec: str, flag: str) -> Path:
    """The path of ``csv:PATH`` given to ``flag``; anything else is one line."""
    fmt, sep, path = spec.partition(":")
    if not sep or fmt != "csv" or not path:
        raise ConfigError(
            f"{flag} {spec!r}: a party's own file is csv:PATH (with --id-column naming the "
            "column of sample ids)"
        )
    where = Path(path).expanduser()
    if not where.is_file():
        raise DataError(
            f"{flag} {spec}: no such file; check the path (a relative one starts at the current "
            "folder)"
        )
    return where


def _ids(
    path: Path, header: list[str], rows: list[tuple[int, list[str]]], id_column: str
) -> tuple[str, ...]:
    if id_column not in header:
        raise DataError(
            f"csv:{path} has no --id-column {id_column!r}; the columns are: {', '.join(header)}"
        )
    j = header.index(id_column)
    ids: list[str] = []
    seen: dict[str, int] = {}
    for i, (line, row) in enumerate(rows):
        sample = row[j]
        if sample.lower() in MISSING:
            missing_cell(path, i, line, id_column)
        if sample in seen:
            raise DataError(
                f"csv:{path}: sample id {sample!r} appears twice in column {id_column!r} (lines "
                f"{seen[sample]} and {line}); give every row its own id"
            )
        seen[sample] = line
        ids.append(sample)
    return tuple(ids)


def read_features(
    spec: str,
    *,
    id_column: str,
    columns: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> KeyedRows:
    """The features of ``csv:PATH``: ``columns`` (default every column but ``id_column`` and
    ``exclude``), numeric, no missing cells."""
    path = csv_path(spec, "--dataset")
    header, rows = csv_rows(path)
    ids = _ids(path, header, rows, id_column)
    if columns is None:
        names = [h for h in header if h != id_column and h not in exclude]
    else:
        unknown = [c for c in columns if c not in header]
        if unknown:
            raise DataError(
                f"csv:{path} has no --columns {', '.join(map(repr, unknown))}; the columns are: "
                f"{', '.join(header)}"
            )
        if id_column in columns:
            raise ConfigError(f"--columns lists the id column {id_column!r}; drop it")
        names = list(columns)
    if not names:
        raise DataError(f"csv:{path} has no feature columns besides {id_column!r}; add some")
    index = [header.index(n) for n in names]
    x = np.empty((len(rows), len(index)), dtype=np.float32)
    for i, (line, row) in enumerate(rows):
        for j, col in enumerate(index):
            x[i, j] = parse_number(row[col], path, i, line, header[col])
    return KeyedRows(ids, x=torch.from_numpy(x), columns=tuple(names))


def read_labels(spec: str, *, id_column: str, target: str | None) -> KeyedRows:
    """The ``target`` column of ``csv:PATH`` (labels as text, none missing), by sample id."""
    path = csv_path(spec, "--labels")
    header, rows = csv_rows(path)
    ids = _ids(path, header, rows, id_column)
    if target is None or target not in header:
        given = "needs --target COLUMN" if target is None else f"has no column --target {target!r}"
        raise DataError(f"csv:{path} {given} (the labels); the columns are: {', '.join(header)}")
    t = header.index(target)
    for i, (line, row) in enumerate(rows):
        if row[t].lower() in MISSING:
            missing_cell(path, i, line, target)
    return KeyedRows(ids, labels=np.array([row[t] for _, row in rows]))
