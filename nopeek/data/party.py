"""What one party of a distributed run holds: its own data keys of the samples, nothing else.

A party's :class:`PartyData` has, for each split (train, test, aux), only the data keys its
topology gives it (``x`` for the client of vanilla, ``x0`` for the first client of vertical,
``y`` for the label party) and the samples' ids; the runtime cuts its batches from it, so no
party's code ever holds another party's data. There are two ways to get one:

- **A built-in data set** (or one file that every party is given): each party loads it as the
  in-process run does and keeps only its own view (:func:`party_view`): same splits, same
  numbers as the in-process run.
- **Each party's own files, keyed by sample id** (``--id-column``): a party reads only its own
  file (:func:`read_own`), the parties align their ids by private set intersection
  (:mod:`nopeek.runtime.align`), and each derives the same train/test/aux split from the size
  of the aligned set and the seed alone (:func:`aligned_splits`), without seeing the others'
  data or labels (so the split is not stratified). Rows follow the aligned order (the shared ids
  sorted); the ids on every message are positions in it, never the ids themselves. Features are
  standardized column by column on the train split (:func:`standardize`), so each column is
  the same whichever party holds it: a run equals the in-process run on the joined file
  (``nopeek train --dataset csv:joined.csv --target y --id-column id``, :func:`load_keyed`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np
import torch
from torch import Tensor

from nopeek.data.files import label_classes
from nopeek.data.keyed import KeyedRows, read_features, read_labels
from nopeek.data.splits import AUX_FRACTION, TEST_FRACTION, Dataset, Split, check_finite
from nopeek.errors import ConfigError, DataError
from nopeek.seeding import numpy_rng

if TYPE_CHECKING:
    from nopeek.topology import Topology


class OwnFiles(Protocol):
    """What this module reads of a run's config (a :class:`nopeek.config.TrainConfig`)."""

    topology: str
    clients: int
    label_party: str
    dataset: str
    labels: str | None
    target: str | None
    id_column: str | None
    columns: str | None
    one_vs_rest: int | None
    shuffle_labels: bool
    seed: int
    max_train: int | None


MIN_ALIGNED = 20
"""Samples the parties must share: a fifth of them is the test split, and dCor needs 4."""
OWN_DATA_TOPOLOGIES = ("vanilla", "vertical")


@dataclass(frozen=True)
class PartySplit:
    """One split of what a party holds: ``data`` maps each of its data keys to (N, ...) rows,
    ``ids`` (N,) int64 are the samples' ids (the same at every party)."""

    data: dict[str, Tensor]
    ids: Tensor

    def __post_init__(self) -> None:
        bad = {k: tuple(v.shape) for k, v in self.data.items() if len(v) != len(self.ids)}
        if bad:
            raise DataError(f"a party's split has {len(self.ids)} ids but data of shapes {bad}")

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def holds(self, key: str) -> bool:
        return key in self.data

    @property
    def y(self) -> Tensor:
        """The labels (N,), where this party holds them."""
        if "y" not in self.data:
            raise DataError(
                f"this party holds no labels (only {', '.join(self.data) or 'the sample ids'})"
            )
        return self.data["y"]

    def subset(self, index: Tensor) -> PartySplit:
        """The rows at positions ``index``."""
        return PartySplit({k: v[index] for k, v in self.data.items()}, self.ids[index])

    def batch(self, index: Tensor | slice) -> dict[str, Tensor]:
        """The rows at ``index`` as a batch: each data key, and ``ids``."""
        return {**{k: v[index] for k, v in self.data.items()}, "ids": self.ids[index]}


@dataclass(frozen=True)
class PartyData:
    """A party's own part of a data set, shaped like :class:`~nopeek.data.Dataset` where the
    runtime reads it. ``input_shape`` and ``n_classes`` are the whole model's (what every party
    builds it from); ``widths``: the feature count of each vertical client (None: even column
    blocks); ``agreed``: what every party must agree on about the data (the handshake compares
    it), None where the config's data set names it."""

    name: str
    party: str
    train: PartySplit
    test: PartySplit
    aux: PartySplit
    input_shape: tuple[int, ...]
    n_classes: int
    kind: str
    data_range: float
    class_names: tuple[str, ...] = ()
    widths: tuple[int, ...] | None = None
    agreed: dict[str, Any] | None = None
    input_dtype: torch.dtype = torch.float32
    feature_mean: Tensor | None = field(default=None, repr=False)
    feature_std: Tensor | None = field(default=None, repr=False)


def party_view(dataset: Dataset, topology: Topology, party: str) -> PartyData:
    """Party ``party``'s view of the whole ``dataset``: per split, only the keys it holds."""

    def view(split: Split) -> PartySplit:
        return PartySplit(topology.views(split.batch(slice(None)), [party])[party], split.ids)

    labels = party in topology.holders("y")
    return PartyData(
        dataset.name,
        party,
        view(dataset.train),
        view(dataset.test),
        view(dataset.aux),
        tuple(dataset.input_shape),
        dataset.n_classes,
        dataset.kind,
        dataset.data_range,
        tuple(dataset.class_names) if labels else (),
        input_dtype=dataset.input_dtype,
    )


RunSplit: TypeAlias = Split | PartySplit
"""A split as the runtime and the run loop read it (``batch``, ``subset``, ``y``, ``ids``): a
whole data set's, or one party's part of it in a distributed run."""
RunData: TypeAlias = Dataset | PartyData
"""What a run trains on: a whole data set (in one process), or one party's part of it."""


# --- who holds what, before the topology is built -------------------------------------------
@dataclass(frozen=True)
class Roster:
    """The parties of a run on per-party files, in rank order, and the data keys each holds
    (what the topology will say, known before the data's shapes are)."""

    name: str
    parties: list[str]
    holds: dict[str, tuple[str, ...]]
    label_party: str

    @property
    def label_parties(self) -> list[str]:
        return [self.label_party]

    @property
    def data_parties(self) -> list[str]:
        """The parties that hold any data (they take part in the alignment)."""
        return [p for p in self.parties if self.holds[p]]

    def check(self, topology: Topology) -> None:
        """The built topology gives every party the keys this roster said (else a bug)."""
        got = {
            p: tuple(k for k in topology.owners if p in topology.holders(k)) for p in self.parties
        }
        if topology.parties != self.parties or got != self.holds:
            raise AssertionError(f"roster {self.holds} != topology {got}")


def roster(config: OwnFiles) -> Roster:
    """The :class:`Roster` of ``config``'s topology (vanilla or vertical)."""
    if config.topology == "vanilla":
        return Roster(
            "vanilla", ["client", "server"], {"client": ("x",), "server": ("y",)}, "server"
        )
    if config.topology == "vertical":
        clients = [f"client{k}" for k in range(config.clients)]
        holds: dict[str, tuple[str, ...]] = {c: (f"x{k}",) for k, c in enumerate(clients)}
        holds |= {"server": ()}
        holds[config.label_party] += ("y",)
        return Roster("vertical", [*clients, "server"], holds, config.label_party)
    raise ConfigError(
        f"each party reading its own files (--id-column) works with --topology "
        f"{' or '.join(OWN_DATA_TOPOLOGIES)}, not {config.topology}"
    )


# --- one party's own files ------------------------------------------------------------------
def _columns(config: OwnFiles) -> list[str] | None:
    if config.columns is None:
        return None
    return [c.strip() for c in config.columns.split(",") if c.strip()]


def read_own(config: OwnFiles, plan: Roster, me: str) -> KeyedRows:
    """The rows of party ``me``'s own files: its features (``--dataset csv:PATH``) if it holds
    an input, its labels (``--labels csv:PATH``, column ``--target``) if it holds the labels.
    A file its role does not hold, or a missing one, is one line."""
    if config.one_vs_rest is not None or config.shuffle_labels:
        raise ConfigError(
            "--one-vs-rest and --shuffle-labels change the labels of one data set; with each "
            "party's own files, relabel the label file instead"
        )
    holds = plan.holds[me]
    wants_x, wants_y = any(k != "y" for k in holds), "y" in holds
    if config.dataset and not wants_x:
        raise ConfigError(
            f"{me} holds no features in --topology {plan.name}; drop --dataset {config.dataset}"
        )
    if config.labels and not wants_y:
        raise ConfigError(f"{me} holds no labels ({plan.label_party} does); drop --labels")
    if wants_x and not config.dataset:
        raise ConfigError(f"{me} holds features: give its own file, --dataset csv:PATH")
    if wants_y and not config.labels:
        raise ConfigError(
            f"{me} holds the labels: give its own file, --labels csv:PATH --target COLUMN"
        )
    if config.id_column is None:
        raise ConfigError("a party's own files need --id-column COLUMN (the sample ids)")
    x = y = None
    if wants_x and config.dataset:  # (a party wanting x without --dataset was refused above)
        skip = (config.target,) if config.target else ()
        x = read_features(
            config.dataset, id_column=config.id_column, columns=_columns(config), exclude=skip
        )
    if wants_y and config.labels:  # (as is one wanting y without --labels)
        y = read_labels(config.labels, id_column=config.id_column, target=config.target)
    if x is not None and y is not None:
        return x.with_labels(y)
    return x or y or KeyedRows(())


# --- the aligned data -----------------------------------------------------------------------
def aligned_splits(
    n: int, seed: int, max_train: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Positions ``0..n-1`` of the aligned samples -> sorted (train, test, aux) positions: a
    seeded permutation cut 0.6 / 0.2 / 0.2 (test and aux rounded up, as the bundled sets);
    ``max_train`` keeps a seeded subset of train. Only ``n`` and ``seed`` decide it, so every
    party gets the same split without seeing anyone's data or labels (hence not stratified).

    >>> [len(s) for s in aligned_splits(10, seed=0)]
    [6, 2, 2]
    """
    order = numpy_rng(seed, "data.aligned").permutation(n)
    n_test = math.ceil(TEST_FRACTION * n - 1e-9)
    n_aux = math.ceil(AUX_FRACTION / (1.0 - TEST_FRACTION) * (n - n_test) - 1e-9)
    test, aux, train = order[:n_test], order[n_test : n_test + n_aux], order[n_test + n_aux :]
    if max_train is not None and max_train < len(train):
        train = numpy_rng(seed, "data.aligned-max-train").permutation(train)[:max_train]
    return _sorted_positions(train), _sorted_positions(test), _sorted_positions(aux)


def _sorted_positions(part: np.ndarray) -> Tensor:
    return torch.from_numpy(np.sort(part).astype(np.int64))


def standardize(train: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and std (population; 1 for a constant column), (D,) each, of ``train`` (N, D).

    Each column on its own copy: a whole-matrix reduction rounds some columns differently
    depending on how many columns sit beside them, and a column must come out the same at a
    party that holds it alone as in the joined table.
    """
    cols = [train[:, j].contiguous() for j in range(train.shape[1])]
    mean = torch.stack([c.mean() for c in cols])
    std = torch.stack([c.std(correction=0) for c in cols])
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def _check_size(n: int) -> None:
    if n < MIN_ALIGNED:
        raise DataError(
            f"the parties share {n} samples; training needs at least {MIN_ALIGNED} (a fifth "
            "of them is the test split, and dCor needs 4): check that every party names the "
            "same ids in its --id-column"
        )


def _labels(raw: np.ndarray, where: str) -> tuple[Tensor, tuple[str, ...]]:
    y, names = label_classes(raw, where)
    if len(names) < 2:
        raise DataError(f"{where} has one class among the shared samples; a classifier needs 2")
    return y, names


def describe_own(rows: KeyedRows, ids: Sequence[str] | None, *, where: str) -> dict[str, Any]:
    """What party's data is, for the others to build the model: its feature count and (the
    label party) the number of classes among the aligned samples ``ids``."""
    out: dict[str, Any] = {"features": None, "classes": None}
    if rows.x is not None:
        out["features"] = int(rows.x.shape[1])
    if rows.labels is not None and ids is not None:
        out["classes"] = len(_labels(rows.labels[rows.rows_of(ids).numpy()], where)[1])
    return out


def own_party_data(
    config: OwnFiles, plan: Roster, me: str, rows: KeyedRows, ids: Sequence[str] | None, n: int,
    shapes: dict[str, dict[str, Any]], agreed: dict[str, Any],
) -> PartyData:  # fmt: skip
    """Party ``me``'s :class:`PartyData` from its own ``rows``: the aligned samples ``ids`` (in
    the aligned order; None for a party without data, which knows only their number ``n``),
    split by :func:`aligned_splits`; ``shapes``: every party's :func:`describe_own`."""
    _check_size(n)
    data: dict[str, Tensor] = {}
    names: tuple[str, ...] = ()
    spread = 0.0
    train, test, aux = aligned_splits(n, config.seed, config.max_train)
    if ids is not None:
        order = rows.rows_of(ids)
        if rows.x is not None:
            x = rows.x[order]
            check_finite(x, what=f"--dataset {config.dataset}")
            mean, std = standardize(x[train])
            x = (x - mean) / std
            spread = float(x[train].max() - x[train].min())
            data[next(k for k in plan.holds[me] if k != "y")] = x
        if rows.labels is not None:
            data["y"], names = _labels(rows.labels[order.numpy()], f"--labels {config.labels}")
    widths = [shapes[p]["features"] for p in plan.parties if shapes[p]["features"]]
    everyone = torch.arange(n, dtype=torch.int64)

    def part(index: Tensor) -> PartySplit:
        return PartySplit({k: v[index] for k, v in data.items()}, everyone[index])

    return PartyData(
        config.dataset or config.labels or "",
        me,
        part(train),
        part(test),
        part(aux),
        (sum(widths),),
        int(shapes[plan.label_party]["classes"]),
        "tabular",
        spread,
        names,
        widths=tuple(widths) if plan.name == "vertical" else None,
        agreed=agreed,
    )


def load_keyed(
    path: str,
    *,
    id_column: str,
    target: str | None,
    seed: int,
    max_train: int | None = None,
    columns: str | None = None,
    **_: Any,
) -> Dataset:
    """The csv file ``path`` keyed by ``id_column``, in one process: rows in id order, split by
    :func:`aligned_splits`, standardized by :func:`standardize`; exactly what the parties of a
    run on per-party files build from their own columns of it."""
    spec = f"csv:{path}"
    names = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    skip = (target,) if target else ()
    features = read_features(spec, id_column=id_column, columns=names, exclude=skip)
    rows = features.with_labels(read_labels(spec, id_column=id_column, target=target))
    ids = sorted(rows.ids)
    _check_size(len(ids))
    order = rows.rows_of(ids)
    assert rows.x is not None and rows.labels is not None  # features joined with labels
    x = rows.x[order]
    check_finite(x, what=f"{spec} x")
    y, classes = _labels(rows.labels[order.numpy()], f"{spec} column {target!r}")
    train, test, aux = aligned_splits(len(ids), seed, max_train)
    mean, std = standardize(x[train])
    whole = Split((x - mean) / std, y, torch.arange(len(ids), dtype=torch.int64))
    parts = [whole.subset(p) for p in (train, test, aux)]
    return Dataset(
        name=spec,
        train=parts[0],
        test=parts[1],
        aux=parts[2],
        input_shape=(x.shape[1],),
        n_classes=len(classes),
        kind="tabular",
        data_range=float(parts[0].x.max() - parts[0].x.min()),
        class_names=classes,
        feature_mean=mean,
        feature_std=std,
    )
