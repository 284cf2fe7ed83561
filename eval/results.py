"""The sweep's result table: one row per run x attack, as results.csv and results.json.

Columns, in order:

- ``setting`` (the run-name slug), ``label`` (human-readable setting), ``run`` (the run
  directory, relative to the sweep);
- every :class:`~nopeek.config.TrainConfig` field under its own name (``dataset``, ``model``,
  ``cut``, ``alpha``, ``seed``, ``defenses`` joined by ``+``, ...);
- every training metric of ``metrics.json`` under its own name (``test_accuracy``,
  ``dcor_test``, ``train_seconds``, ``epsilon_cut`` where a defense reports it, ...);
- ``attack`` and then every key of the attack's JSON under its own name (``ssim``, ``psnr``,
  ``baseline_ssim``, ``dcor_reconstruction``, ``auc``, ``auc_per_epoch``, ``threat_model``,
  ``n_samples``...); a key that a config or training-metric column already uses (``cut``) is
  written ``attack_<key>``.

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

from nopeek._io import atomic_write_bytes, atomic_write_json
from nopeek.config import TrainConfig
from nopeek.errors import ConfigError

if TYPE_CHECKING:
    from nopeek.eval.sweep import SweepSpec

LEAD = ["setting", "label", "run"]
CONFIG_COLUMNS = [f.name for f in fields(TrainConfig)]


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"cannot read {path} ({type(exc).__name__}); rerun the sweep to redo that run"
        ) from None


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
        config = _read(path / "config.json")
        base = {"setting": setting.slug, "label": setting.label, "run": str(path.relative_to(out))}
        base |= {k: config.get(k) for k in CONFIG_COLUMNS}
        base["defenses"] = "+".join(config.get("defenses") or [])
        attacks = {a: _read(path / "attacks" / f"{a}.json") for a in spec.attack_names}
        rows += make_rows(base, _read(path / "metrics.json"), attacks)
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
    atomic_write_json(Path(out) / "results.json", rows)


def read_results(out: str | Path) -> list[dict[str, Any]]:
    """The rows of ``out/results.json``."""
    path = Path(out) / "results.json"
    if not path.is_file():
        raise ConfigError(f"no results in {out}; run `nopeek sweep --out {out}` first")
    return _read(path)
