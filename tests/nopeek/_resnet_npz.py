"""torchvision's ResNet-18 on a tiny npz of random images: the `nopeek train` runs that the
fx-cut tests (test_fx_split_cli.py, test_packing.py) cut in different places."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nopeek.cli.main import main

FAST = ["--epochs", "1", "--batch-size", "6", "--dcor-samples", "4", "--quiet"]


def resnet_on_npz(tmp_path: Path, rows: int) -> list[str]:
    """`nopeek train` arguments for ResNet-18 on a new npz of ``rows`` random (3, 16, 16)
    images with two classes, written in ``tmp_path``."""
    rng = np.random.default_rng(0)
    data = tmp_path / "tiny.npz"
    np.savez(data, x=rng.random((rows, 3, 16, 16), dtype=np.float32), y=np.arange(rows) % 2)
    return ["train", "--model", "torchvision:resnet18", "--dataset", f"npz:{data}"]


def train_at(args: list[str], cut: str, out: Path) -> dict:
    """Train ``args`` for one quick epoch cut at ``cut`` into ``out``; its metrics.json."""
    assert main([*args, "--cut", cut, *FAST, "--out", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text())
