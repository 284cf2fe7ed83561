"""The training configuration: one flat record, validated in one place, saved as config.json."""

from __future__ import annotations

import importlib
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nopeek.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from nopeek.data import Dataset
    from nopeek.data.party import RunData

SEED_MAX = 2**31 - 1
"""Seeds are integers in 0..SEED_MAX: every seed derived from them (batch order, data splits,
noise generators) stays within the ranges of torch's and numpy's generators."""


def check_seed(seed: Any, *, what: str = "seed") -> None:
    """Refuse a seed outside 0..:data:`SEED_MAX` (or not an integer) in one line.

    >>> check_seed(2**31 - 1)
    >>> check_seed(2**31, what="--seeds")
    Traceback (most recent call last):
    ...
    nopeek.errors.ConfigError: --seeds must be an integer from 0 to 2**31 - 1 = 2147483647, got 2147483648; pick one in that range, e.g. 0
    """  # noqa: E501
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(
            f"{what} must be an integer from 0 to 2**31 - 1 = {SEED_MAX}, got {seed!r}; "
            "pick one in that range, e.g. 0"
        )


def _describe(hint: Any) -> str:
    """What a value of type ``hint`` looks like in JSON, for error messages."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join([_describe(a) for a in args] + ["null"])
    if typing.get_origin(hint) is list:
        return f"a list of {_describe(args[0]).removeprefix('a ')}s"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return names.get(hint, str(hint))


def _fits(value: Any, hint: Any) -> bool:
    """Whether the JSON ``value`` has the type ``hint`` (int, float, bool, str, list, | None)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if hint is type(None):
        return value is None
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, hint)


def _typed(data: dict[str, Any], *, where: str, fix: str) -> dict[str, Any]:
    """``data`` (known :class:`TrainConfig` fields) with each value's type checked; numbers of
    float fields as floats. A wrong type is one line naming ``where``, the field and ``fix``."""
    hints = typing.get_type_hints(TrainConfig)
    values = {}
    for name, value in data.items():
        if not _fits(value, hints[name]):
            shown = repr(value) if len(repr(value)) <= 40 else type(value).__name__
            raise ConfigError(
                f"{where} field {name!r} must be {_describe(hints[name])}, got {shown}; {fix}"
            )
        values[name] = float(value) if hints[name] is float else value
    return values


@dataclass
class TrainConfig:
    """Everything that fixes a run. Same config (seed included) -> same numbers.

    ``cut`` is one cut name or several separated by commas (multi-hop / u-shaped); empty means
    the model's default cut. ``defenses`` holds defense specs as given on the command line
    (resolved by :mod:`nopeek.defenses`); ``malicious_server`` names an active attack;
    ``compress`` the compressors at the cut (``forward=topk:0.1,backward=int8``, see
    :mod:`nopeek.compress.spec`; None: messages go uncompressed).
    """

    dataset: str = "digits"
    model: str = ""
    cut: str = ""
    topology: str = "vanilla"
    alpha: float = 0.0
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    one_vs_rest: int | None = None
    shuffle_labels: bool = False
    data_root: str | None = None
    download: bool = False
    max_train: int | None = None
    record_samples: int = 256
    dcor_samples: int = 1000
    defenses: list[str] = field(default_factory=list)
    delta: float = 1e-5
    malicious_server: str | None = None
    compress: str | None = None
    # multi-party configurations: the options the topologies take, each checked by the topology
    # module that owns it (see nopeek.topology); ignored by topologies that do not take them
    clients: int = 2
    merge: str = "concat"
    tasks: str = "label,parity"
    relay: str = "peer"
    non_iid: float | None = None
    splitfed: str = "v2"
    local_epochs: int = 1
    label_party: str = "server"
    # the user's own data files (see nopeek.data.user): csv label column, imagefolder resize, and
    # the file's class names (filled in by resolved(); a reload checks the file still has them)
    target: str | None = None
    image_size: int | None = None
    class_names: list[str] | None = None
    # samples keyed by id (see nopeek.data.party): the id column; the feature columns of
    # ``dataset`` (comma-separated; default all but the id and target); and, at the label party
    # of a distributed run where each party reads its own files, its label file (``dataset``
    # is then its own features, or "" where it holds none)
    id_column: str | None = None
    columns: str | None = None
    labels: str | None = None

    @property
    def cuts(self) -> list[str]:
        return [c.strip() for c in self.cut.split(",") if c.strip()]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(
        cls,
        data: Any,
        *,
        where: str = "config",
        fix: str = "fix it or train the run anew with --overwrite",
    ) -> TrainConfig:
        """The config saved as ``data`` (parsed JSON), each field's type checked, validated.

        ``where`` names the source (a file) in the one-line :class:`ConfigError` for a value of
        the wrong type or an unknown key (which ends with ``fix``), or a value out of range.

        >>> TrainConfig.from_dict({"epochs": "3"}, where="run/config.json")
        Traceback (most recent call last):
        ...
        nopeek.errors.ConfigError: run/config.json field 'epochs' must be an integer, got '3'; fix it or train the run anew with --overwrite
        """  # noqa: E501
        if not isinstance(data, dict):
            raise ConfigError(
                f"{where} must hold a JSON object of config fields, got {type(data).__name__}; "
                f"{fix}"
            )
        unknown = sorted(set(data) - set(typing.get_type_hints(cls)))
        if unknown:
            raise ConfigError(f"{where} has unknown config keys {unknown}; remove them")
        config = cls(**_typed(data, where=where, fix=fix))
        try:
            config.validate()
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return config

    def load_data(self) -> Dataset:
        """The data set this config trains on (splits, one-vs-rest, shuffling as configured)."""
        from nopeek.data import load_dataset

        if self.labels is not None:
            raise ConfigError(
                f"--labels {self.labels} is one party's own label file (nopeek party); in one "
                "process give the labels in --dataset's file and name their column with --target"
            )
        return load_dataset(
            self.dataset,
            seed=self.seed,
            data_root=self.data_root,
            download=self.download,
            one_vs_rest=self.one_vs_rest,
            shuffle_labels=self.shuffle_labels,
            max_train=self.max_train,
            target=self.target,
            image_size=self.image_size,
            class_names=self.class_names,
            id_column=self.id_column,
            columns=self.columns,
        )

    @property
    def own_files(self) -> bool:
        """Whether samples are keyed by id (``id_column``): in a distributed run, each party
        then reads only its own files and the parties align their ids first."""
        return self.id_column is not None

    def validate(self) -> None:
        """Raise a one-line :class:`ConfigError` for any value out of range."""
        from nopeek.topology import check_config

        check_config(self)  # the topology's name, and the options it takes (its own checks)
        if not math.isfinite(self.alpha) or self.alpha < 0:
            raise ConfigError(
                f"alpha must be >= 0, got {self.alpha}; use --alpha 0 to disable NoPeek"
            )
        if self.epochs <= 0:
            raise ConfigError(f"epochs must be > 0, got {self.epochs}; pass e.g. --epochs 30")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.batch_size < 2 and self.alpha > 0:
            raise ConfigError(
                f"NoPeek (alpha={self.alpha}) needs batches of at least 2 samples to measure "
                f"distance correlation, got --batch-size {self.batch_size}; use --batch-size >= 2"
            )
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta}; pass e.g. --delta 1e-5")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.record_samples < 0 or self.dcor_samples < 4:
            raise ConfigError("record_samples must be >= 0 and dcor_samples >= 4")
        if self.max_train is not None and self.max_train < 2:
            raise ConfigError(f"max_train must be >= 2, got {self.max_train}")
        check_seed(self.seed, what="seed")
        if self.compress is not None:
            from nopeek.compress import parse_compress

            parse_compress(self.compress)
        self._validate_keyed()

    def _validate_keyed(self) -> None:
        if self.id_column is None:
            for flag, value in (("--labels", self.labels), ("--columns", self.columns)):
                if value is not None:
                    raise ConfigError(
                        f"{flag} needs --id-column (the column that pairs a file's rows with "
                        "the other parties' by sample id)"
                    )
            return
        if not self.id_column.strip():
            raise ConfigError("--id-column must name a column, got an empty name")
        for flag, value in (("--dataset", self.dataset), ("--labels", self.labels)):
            if value and not value.startswith("csv:"):
                raise ConfigError(
                    f"{flag} {value}: files keyed by --id-column are csv:PATH (a header row, "
                    "one row per sample)"
                )

    def build_context(
        self, dataset: RunData, make_model: Callable[[tuple[int, ...], int, int], nn.Module]
    ) -> Any:
        """The :class:`~nopeek.topology.BuildContext` of this config for ``dataset``: the data's
        shape and classes, and the options its topology takes."""
        from nopeek.topology import TOPOLOGIES, BuildContext

        return BuildContext(
            input_shape=tuple(dataset.input_shape),
            n_classes=dataset.n_classes,
            make_model=make_model,
            widths=getattr(dataset, "widths", None),
            **TOPOLOGIES.get(self.topology).context(self),
        )

    def resolved(self) -> TrainConfig:
        """A copy with the model and cut defaults filled in (what config.json records)."""
        from nopeek.data import default_model, file_model
        from nopeek.data.user import describe
        from nopeek.models import MODELS
        from nopeek.topology import TOPOLOGIES

        user = None
        if self.own_files:  # csv features keyed by id, read when the data are loaded
            model = self.model or file_model("tabular", ())
        else:  # a data file (csv:PATH, ...) is read here, so bad data fail before a run starts
            user = describe(self.dataset, target=self.target, image_size=self.image_size)
            # else a registered data set's own default, or one line naming --model
            model = self.model or (user.default_model if user else default_model(self.dataset))
        cut = self.cut or MODELS.get(model).default_cut
        if not cut:  # torchvision:/module: models have no default cut
            from nopeek.models import missing_cut

            raise missing_cut(model)
        TOPOLOGIES.get(self.topology).check_cuts([c for c in cut.split(",") if c.strip()])
        data = self.to_dict() | {"model": model, "cut": cut, "defenses": list(self.defenses)}
        if self.compress is not None:
            from nopeek.compress import canonical

            data["compress"] = canonical(self.compress) or None
        if user is not None and self.class_names is None:
            data["class_names"] = list(user.class_names)
        return TrainConfig(**data)


DERIVED = {"class_names": ("dataset", "target", "image_size")}
"""Fields :meth:`TrainConfig.resolved` fills in from others, with the fields they come from. A
config file's value is kept (a reload checks the data still have it) unless a flag changes one of
those fields; then it is dropped and filled in afresh from the new data."""


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The :class:`TrainConfig` fields set in a TOML file, or in a run's ``config.json`` (the
    file ``nopeek train`` writes): ``.json`` is read as JSON, anything else as TOML.

    Every key must be a field (the one-line error names the key and the valid ones), every
    value of the field's type; a field the file leaves out keeps its default.

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.toml"
    >>> _ = path.write_text('alpha = 2\\nepochs = 3\\n')
    >>> read_config_file(path)
    {'alpha': 2.0, 'epochs': 3}
    >>> _ = path.write_text('epoch = 3\\n')
    >>> read_config_file(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nopeek.errors.ConfigError: ...run.toml: unknown key 'epoch'; valid keys: dataset, model, ...
    """
    path = Path(path).expanduser()
    data = _parse_config_file(path)
    valid = list(typing.get_type_hints(TrainConfig))
    for key in data:
        if key not in valid:
            raise ConfigError(f"{path}: unknown key {key!r}; valid keys: {', '.join(valid)}")
    return _typed(data, where=str(path), fix="fix the file")


def _parse_config_file(path: Path) -> dict[str, Any]:
    """The key/value table of the JSON or TOML file at ``path`` (one-line errors)."""
    if not path.is_file():
        raise ConfigError(
            f"--config {path}: no such file; give a .toml file or a run's config.json"
        )
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else _toml().loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSON and TOML errors included
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot read --config {path} ({reason}); fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path} must hold a table of config fields, not a list")
    return data


def _toml() -> types.ModuleType:
    """The stdlib TOML reader (Python >= 3.11), else the ``tomli`` backport if installed."""
    for name in ("tomllib", "tomli"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ConfigError(
        "reading TOML needs Python 3.11 or the tomli package; `pip install tomli`, or "
        "give a .json config file"
    )


def with_flags(saved: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """A config file's fields ``saved`` overridden by the flags the user gave (``flags``); a
    :data:`DERIVED` field is dropped when a flag changes what it comes from.

    >>> with_flags({"dataset": "npz:a.npz", "class_names": ["0", "1"], "alpha": 1.0},
    ...            {"dataset": "npz:b.npz"})
    {'dataset': 'npz:b.npz', 'alpha': 1.0}
    """
    merged = saved | flags
    for name, sources in DERIVED.items():
        if name not in flags and any(k in flags and flags[k] != saved.get(k) for k in sources):
            merged.pop(name, None)
    return merged
