"""What an attack reports: :class:`AttackResult`, the record behind ``attacks/<attack>.json``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nopeek.attacks.base import LABEL, LabelScores, Reconstruction

_METRICS = ("ssim", "psnr", "mse")
_RECON_KEYS = (*_METRICS, *(f"baseline_{m}" for m in _METRICS), "dcor_reconstruction", "data_range")
_TABULAR_KEYS = ("r2", "r2_per_feature", "rows_within_tolerance", "baseline_rows_within_tolerance")
_TABULAR_KEYS += ("categorical_exact", "baseline_categorical_exact", "categorical_columns")
_TABULAR_KEYS += ("tolerance",)
_LABEL_KEYS = ("auc", "auc_per_epoch", "epochs", "auc_folded", "auc_orientation")
_LABEL_KEYS += ("auc_folded_per_epoch", "auc_folded_max", "auc_folded_max_epoch")
_LABEL_KEYS += ("chance_auc_folded_max",)


@dataclass
class AttackResult:
    """One attack's outcome on one run; :meth:`to_json` is what ``attacks/<name>.json`` holds.

    Every result has ``leak`` in [0, 1]: 0 = no better than a blind guess, 1 = exact
    (:mod:`nopeek.attacks.leak`; None only for a label attack whose AUC is undefined).
    Reconstruction attacks fill ``ssim`` ... ``data_range`` (``ssim`` is ``None`` for tabular
    data) and, on tabular data, ``r2`` ... ``tolerance`` (:func:`~nopeek.attacks.leak.
    tabular_report`, in the data's original units). Label attacks fill ``auc`` (final epoch, as
    the attack names the classes), ``auc_per_epoch``, the folded ``max(auc, 1 - auc)``
    (``auc_folded``, final epoch) with the ``auc_orientation`` it implies (``"as named"`` or
    ``"flipped"``), ``auc_folded_per_epoch``, the worst epoch ``auc_folded_max`` /
    ``auc_folded_max_epoch``, what the same scores reach against permuted labels
    (``chance_auc_folded_max``) and, when the attack makes hard guesses, ``accuracy`` (final
    epoch). ``output`` keeps the raw :class:`Reconstruction` or :class:`LabelScores` (not
    written to JSON).
    """

    attack: str
    kind: str
    threat_model: str
    cut: str
    run: str
    seed: int
    party: str = ""  # whose activations crossed the attacked cut
    receiver: str = ""  # who received them (the attacker, or the gradient sender)
    n_samples: int = 0
    steps: int | None = None
    aux_size: int | None = None
    ssim: float | None = None
    psnr: float | None = None
    mse: float | None = None
    baseline_ssim: float | None = None
    baseline_psnr: float | None = None
    baseline_mse: float | None = None
    dcor_reconstruction: float | None = None
    data_range: float | None = None
    leak: float | None = None
    r2: float | None = None
    r2_per_feature: list[float | None] | None = None
    rows_within_tolerance: float | None = None
    baseline_rows_within_tolerance: float | None = None
    categorical_exact: float | None = None
    baseline_categorical_exact: float | None = None
    categorical_columns: int | None = None
    tolerance: float | None = None
    auc: float | None = None
    auc_per_epoch: list[float | None] | None = None
    epochs: list[int] | None = None
    auc_folded: float | None = None
    auc_orientation: str | None = None
    auc_folded_per_epoch: list[float | None] | None = None
    auc_folded_max: float | None = None
    auc_folded_max_epoch: int | None = None
    chance_auc_folded_max: float | None = None
    accuracy: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    output: Reconstruction | LabelScores | None = field(default=None, repr=False)
    path: Path | None = field(default=None, repr=False)  # the JSON written, if any

    def to_json(self) -> dict[str, Any]:
        """Flat JSON: the shared keys (``leak`` among them) plus this kind's metric keys
        (``None`` -> null; the tabular keys only for tabular reconstructions)."""
        shared = ("attack", "kind", "threat_model", "n_samples", "cut", "party", "receiver")
        shared += ("run", "seed", "steps", "leak")
        out = {k: getattr(self, k) for k in shared}
        if self.aux_size is not None:
            out["aux_size"] = self.aux_size
        if self.kind == LABEL:
            out |= {k: getattr(self, k) for k in _LABEL_KEYS}
            if self.accuracy is not None:
                out["accuracy"] = self.accuracy
        else:
            out |= {k: getattr(self, k) for k in _RECON_KEYS}
            if self.tolerance is not None:
                out |= {k: getattr(self, k) for k in _TABULAR_KEYS}
        keep = {k: v for k, v in self.settings.items() if isinstance(v, (bool, int, float, str))}
        out["settings"] = {k: None if v != v else v for k, v in keep.items()}  # NaN -> null
        return out


__all__ = ["AttackResult"]
