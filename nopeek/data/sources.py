"""Where data come from, registered once each with the model that fits them.

:data:`DATASETS` maps a data set's name to its :class:`DataSource` (a loader and its default
model); installed packages add theirs in the entry-point group ``nopeek.datasets``, naming a
``DataSource`` or a bare loader (which has no default model: a run on it names ``--model``).
:data:`FORMATS` maps the ``FORMAT`` of a ``FORMAT:PATH`` spec (the user's own files, see
:mod:`nopeek.data.user`) to its ``DataSource``, whose default model follows from the file's
kind and shape (:func:`file_model`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from nopeek.data.splits import Dataset
from nopeek.errors import ConfigError
from nopeek.plugins import ENTRY_GROUPS
from nopeek.registry import Registry

Loader = Callable[..., Dataset]  # (*, seed, data_root, download, max_train) -> Dataset

SHAPE_MODELS: dict[tuple[int, ...], str] = {
    (1, 8, 8): "digits-cnn",
    (1, 28, 28): "lenet",
    (3, 32, 32): "resnet18",
}
"""Default model for images of a reference model's fixed input shape; other images get ``cnn``."""


@dataclass(frozen=True)
class DataSource:
    """A registered data set or file format: ``load`` builds the :class:`Dataset`;
    ``default_model`` is the model a run takes without ``--model`` (None: it must be given;
    formats leave it None, their files decide it by :func:`file_model`)."""

    load: Loader
    default_model: str | None = None


def file_model(kind: str, input_shape: tuple[int, ...]) -> str:
    """The default model of a data file: ``mlp`` for features; for images the reference model
    of their fixed shape, or ``cnn`` (any size).

    >>> file_model("tabular", (30,)), file_model("image", (1, 28, 28)), file_model("image", (3, 9, 9))
    ('mlp', 'lenet', 'cnn')
    """  # noqa: E501
    if kind == "tabular":
        return "mlp"
    return SHAPE_MODELS.get(tuple(input_shape), "cnn")


def _check_source(name: str, entry: object) -> None:
    load = entry.load if isinstance(entry, DataSource) else entry
    if not callable(load):
        raise TypeError(
            f"{entry!r} is not a loader (*, seed, data_root, download, max_train) or a DataSource"
        )


DATASETS: Registry[DataSource | Loader] = Registry(
    "dataset", plugins=ENTRY_GROUPS["dataset"], check=_check_source
)
FORMATS: Registry[DataSource] = Registry("data file format")


def source(name: str) -> DataSource:
    """The :class:`DataSource` of a registered data set ``name`` (a plug-in's bare loader has
    no default model)."""
    entry = DATASETS.get(name)
    return entry if isinstance(entry, DataSource) else DataSource(entry)


def find_loader(name: str) -> Loader:
    """The loader of a registered data set ``name``, or of a ``FORMAT:PATH`` spec (a miss lists
    both kinds)."""
    if name in DATASETS:
        return source(name).load
    fmt, sep, path = name.partition(":")
    if sep and fmt in FORMATS:
        return partial(FORMATS.get(fmt).load, path)
    files = ", ".join(f"{f}:PATH" for f in FORMATS.names())
    valid = ", ".join(DATASETS.names())
    raise ConfigError(f"unknown dataset {name!r}; choose one of: {valid}, or a file: {files}")


def default_model(name: str) -> str:
    """The model a run on the registered data set ``name`` takes without ``--model``; one line
    naming ``--model`` where its registration gives none (an unknown name lists the valid ones).

    >>> default_model("digits")
    'digits-cnn'
    """
    find_loader(name)  # an unknown name: one line listing the valid ones
    model = source(name).default_model
    if model is None:
        raise ConfigError(
            f"dataset {name!r} was registered without a default model; pass --model NAME "
            "(nopeek models lists them)"
        )
    return model
