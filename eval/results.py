"""The sweep's result table: one row per run x attack, as results.csv and results.json.

Columns, in order:

- ``setting`` (the run-name slug), ``label`` (human-readable setting), ``run`` (the run
  directory, relative to the sweep);
- every :class:`~nopeek.config.TrainConfig` field under its own name (``dataset``, ``model``,
  ``cut``, ``alpha``, ``seed``, ``defenses`` joined by ``+``, ...);
- every training metric of ``metrics.json`` under its own name (``test_accuracy``,
  ``dcor_test``, ``train_seconds``, ``epsilon_cut`` where a defense reports it, ...);
- ``attack`` and then every key of the attack's JSON under its own name: ``leak`` (every
  attack and modality: 0 = a blind guess, 1 = exact, see :mod:`nopeek.attacks.leak`; the one
  column summaries, the report card and tune read), ``ssim``, ``psnr``, ``baseline_ssim``,
  ``r2``, ``rows_within_tolerance``, ``dcor_reconstruction``, ``auc``, ``auc_folded_max``,
  ``chance_auc_folded_max``, ``threat_model``, ``n_samples``...; a key that a config or
  training-metric column already uses (``cut``) is written ``attack_<key>``.

A run swept without attacks gets one row with an empty ``attack``. In the CSV, lists are
JSON-encoded and missing values are empty cells; results.json holds the same rows as a JSON list
of records (``pandas.DataFrame(json.load(f))`` reads it).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nopeek import schema as S
from nopeek.config import TrainConfig
from nopeek.errors import ConfigError
from nopeek.eval._compat import attack_targets
from nopeek.io import atomic_write_bytes, atomic_write_json
from nopeek.rundir import RunDir

if TYPE_CHECKING:
    from nopeek.eval.sweep import SweepSpec

LEAD = ["setting", "label", "run"]
CONFIG_COLUMNS = [f.name for f in fields(TrainConfig)]
# What the summaries and the report read from a row: required keys, then optional numbers.
ROW_FIELDS = {
    "setting": (S.is_str, "a string"),
    "label": (S.is_str, "a string"),
    "run": (S.is_str, "a string"),
    "seed": (S.is_int, "an integer"),
    "alpha": (S.is_number, "a number"),
    "test_accuracy": (S.is_number, "a number"),
    "attack": (S.is_str, "a string"),
}
METRIC_FIELDS = ("dcor_test", "epsilon_cut", "epsilon_dpsgd", "train_samples")
METRIC_FIELDS += ("bytes_client_to_server", "bytes_server_to_client")
ATTACK_FIELDS = ("leak", "ssim", "baseline_ssim", "auc", "auc_folded_max", "r2")


def _numbers(data: Any, keys: tuple[str, ...], *, where: str, fix: str) -> None:
    """Each of ``keys`` present in ``data`` must be a number or null."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a JSON object, got {S.shown(data)}; {fix}")
    for key in (k for k in keys if k in data):
        S.take(data, key, S.optional(S.is_number), "a number or null", where=where, fix=fix)


def check_row(row: Any, *, where: str, fix: str) -> dict[str, Any]:
    """One result row, with the keys the summaries read (one line naming a bad field)."""
    for key, (check, want) in ROW_FIELDS.items():
        S.take(row, key, check, want, where=where, fix=fix)
    _numbers(row, METRIC_FIELDS + ATTACK_FIELDS, where=where, fix=fix)
    return row


def make_rows(
    base: dict[str, Any], metrics: dict[str, Any], attacks: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Rows of one run: ``base`` (lead + config) and metrics, then one row per attack.

    >>> make_rows({"cut": "conv2"}, {"test_accuracy": 0.9}, {"w": {"ssim": 0.5, "cut": "conv2"}})
    [{'cut': 'conv2', 'test_accuracy': 0.9, 'attack': 'w', 'ssim': 0.5, 'attack_cut': 'conv2'}]
    """
    common = dict(base)
    common |= {k: v for k, v in metrics.items() if k not in common}
    if not attacks:
        return [common | {"attack": ""}]
    rows = []
    for name, result in attacks.items():
        row = common | {"attack": name}
        for key, value in result.items():
            if key == "attack":
                continue
            row[f"attack_{key}" if key in common else key] = value
        rows.append(row)
    return rows


def collect_rows(out: str | Path, spec: SweepSpec) -> list[dict[str, Any]]:
    """Read every run of ``spec`` in sweep ``out`` into rows (setting-major, then seed)."""
    from nopeek.eval.sweep import run_dir

    out = Path(out)
    rows = []
    for setting, seed in spec.runs():
        path = run_dir(out, setting, seed)
        fix = f"delete {path} and rerun the sweep to redo that run"
        folder = RunDir.open(path, "run", fix=fix)
        saved = folder.config()
        config = saved.to_dict()
        base = {"setting": setting.slug, "label": setting.label, "run": str(path.relative_to(out))}
        base |= {k: config.get(k) for k in CONFIG_COLUMNS}
        base["defenses"] = "+".join(config.get("defenses") or [])
        attacks = {}
        for stem in (s for a in spec.attack_names for s, _ in attack_targets(saved, a)):
            attacks[stem] = folder.attack_result(stem)
            where = folder.attack_path(stem)
            _numbers(attacks[stem], ATTACK_FIELDS, where=str(where), fix=fix)
        where = folder.path / RunDir.METRICS
        metrics = folder.metrics()
        S.take(metrics, "test_accuracy", S.is_number, "a number", where=str(where), fix=fix)
        _numbers(metrics, METRIC_FIELDS, where=str(where), fix=fix)
        rows += make_rows(base, metrics, attacks)
    return rows


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """Lead columns, config fields, then every other key in first-seen order."""
    seen = dict.fromkeys(LEAD + CONFIG_COLUMNS)
    for row in rows:
        seen |= dict.fromkeys(row)
    return list(seen)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def to_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV text (header = :func:`columns`).

    >>> print(to_csv([{"setting": "a", "alpha": 0.5, "attack": "w", "auc_per_epoch": [0.5]}]))
    setting,label,run,dataset,...,attack,auc_per_epoch
    a,,,,...,w,[0.5]
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(rows), restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buf.getvalue()


def write_results(out: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write ``out/results.csv`` and ``out/results.json`` atomically."""
    atomic_write_bytes(Path(out) / "results.csv", to_csv(rows).encode())
    atomic_write_json(Path(out) / RunDir.RESULTS, rows)


def read_results(out: str | Path) -> list[dict[str, Any]]:
    """The rows of ``out/results.json``, each checked for the keys the report reads."""
    folder = RunDir.open(out, "sweep")
    rows, path, fix = folder.results(), folder.path / RunDir.RESULTS, folder.results_fix
    return [check_row(row, where=f"{path} row {k}", fix=fix) for k, row in enumerate(rows)]
