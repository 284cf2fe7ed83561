"""The training configuration: one flat record, validated in one place, saved as config.json."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from nopeek.errors import ConfigError

if TYPE_CHECKING:
    from nopeek.data import Dataset

DEFAULT_MODEL = {
    "digits": "digits-cnn",
    "breast-cancer": "mlp",
    "mnist": "lenet",
    "fashion-mnist": "lenet",
    "cifar10": "resnet18",
}


@dataclass
class TrainConfig:
    """Everything that fixes a run. Same config (seed included) -> same numbers.

    ``cut`` is one cut name or several separated by commas (multi-hop / u-shaped); empty means
    the model's default cut. ``defenses`` holds defense specs as given on the command line
    (resolved by :mod:`nopeek.defenses`); ``malicious_server`` names an active attack.
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

    @property
    def cuts(self) -> list[str]:
        return [c.strip() for c in self.cut.split(",") if c.strip()]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; remove them from config.json")
        return cls(**data)

    def load_data(self) -> Dataset:
        """The data set this config trains on (splits, one-vs-rest, shuffling as configured)."""
        from nopeek.data import load_dataset

        return load_dataset(
            self.dataset,
            seed=self.seed,
            data_root=self.data_root,
            download=self.download,
            one_vs_rest=self.one_vs_rest,
            shuffle_labels=self.shuffle_labels,
            max_train=self.max_train,
        )

    def validate(self) -> None:
        """Raise a one-line :class:`ConfigError` for any value out of range."""
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

    def resolved(self) -> TrainConfig:
        """A copy with the model and cut defaults filled in (what config.json records)."""
        from nopeek.models import MODELS

        if self.dataset not in DEFAULT_MODEL and not self.model:
            from nopeek.data import DATASETS

            DATASETS.get(self.dataset)  # raises the unknown-dataset error
        model = self.model or DEFAULT_MODEL[self.dataset]
        cut = self.cut or MODELS.get(model).default_cut
        if self.topology == "u-shaped" and "," not in cut:
            raise ConfigError("u-shaped needs two cuts; pass e.g. --cut conv2,fc1")
        data = self.to_dict() | {"model": model, "cut": cut, "defenses": list(self.defenses)}
        return TrainConfig(**data)
