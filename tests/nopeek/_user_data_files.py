"""Data files in their real on-disk formats (npz, csv, PNG folders) and the CLI run on them,
for the user-data tests."""

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from nopeek.cli.main import main

FAST = ["--epochs", "1", "--dcor-samples", "20", "--record-samples", "8", "--quiet"]


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    return err


def _train(spec: str, out: Path, *extra: str) -> int:
    return main(["train", "--dataset", spec, *extra, *FAST, "--out", str(out)])


def _npz(path: Path, n: int = 40, **arrays) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = np.arange(n) % 2
    np.savez(path, **({"x": x, "y": y} | arrays))
    return path


def _csv(path: Path, rows: list[list], header=("age", "dose", "outcome")) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _csv_rows(n: int = 30) -> list[list]:
    labels = ["sick", "healthy", "unknown"]
    return [[20 + i, round(0.5 * i**1.5, 3), labels[i % 3]] for i in range(n)]


def _pngs(root: Path, per_class: dict[str, int], mode="L", size=(8, 8), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    channels = {"L": (), "RGB": (3,)}[mode]
    for name, count in per_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, size=(size[1], size[0], *channels), dtype=np.uint8)
            Image.fromarray(pixels, mode=mode).save(root / name / f"{i:03d}.png")
    return root
