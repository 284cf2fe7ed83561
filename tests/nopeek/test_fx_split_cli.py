"""The command line on models cut with torch.fx: a torchvision network on the user's own data, a
``module:`` factory and its errors, and ``nopeek models`` listing the cuts of any model."""

import json
import re
from pathlib import Path

import pytest

from nopeek.cli.main import main
from tests.nopeek._resnet_npz import FAST, resnet_on_npz, train_at

ROOT = Path(__file__).resolve().parents[2]
FACTORY = "module:tests.nopeek._factory:make"  # importable with the repository root on the path


@pytest.fixture(autouse=True)
def _from_the_root(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_cli_trains_a_torchvision_resnet18_on_a_tiny_npz(tmp_path, capsys):
    args = resnet_on_npz(tmp_path, 20)
    metrics = train_at(args, "layer1", tmp_path / "run")
    assert metrics["model"] == "torchvision:resnet18" and metrics["cut"] == "layer1"
    assert 0 <= metrics["test_accuracy"] <= 1
    capsys.readouterr()

    assert main([*args, *FAST]) == 2
    assert "has no default cut; pass --cut, e.g. conv1, bn1" in _err(capsys)


def test_cli_trains_a_module_factory_model(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # `module:` imports from the current folder, like `python -m`
    out = tmp_path / "run"
    argv = ["train", "--model", FACTORY, "--cut", "block", "--max-train", "60"]
    assert main([*argv, "--epochs", "1", "--dcor-samples", "20", "--quiet", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["model"] == FACTORY


def test_an_exception_inside_a_module_factory_is_one_line_naming_where(tmp_path, capsys):
    """The user's factory raises: one line naming it, the exception and its line; exit 2."""
    out = tmp_path / "run"
    argv = ["train", "--model", "module:tests.nopeek._factory:broken", "--cut", "stem"]
    assert main([*argv, "--dataset", "digits", "--quiet", "--out", str(out)]) == 2
    want = r"^error: tests\.nopeek\._factory\.broken\(\(1, 8, 8\), 10\) raised KeyError at "
    assert re.match(want + r"_factory\.py:\d+ \('head'\); fix the factory", _err(capsys))
    assert not out.exists()


def test_cli_models_lists_the_cuts_of_any_model(capsys):
    assert main(["models", "--model", "torchvision:resnet18", "--input-shape", "3x32x32"]) == 0
    out = capsys.readouterr().out
    assert "torchvision:resnet18 on inputs 3x32x32: 66 valid cuts" in out
    for i, size in enumerate(["64x8x8", "128x4x4", "256x2x2", "512x1x1"], start=1):
        assert f"  layer{i}    sends {size}\n" in out
    assert main(["models", "--model", FACTORY, "--input-shape", "1x8x8", "--all"]) == 0
    out = capsys.readouterr().out
    want = "block.conv1  sends 2 tensors (relu 8x8x8, block.conv1 8x8x8): a skip crosses, sent"
    assert f"{want} packed" in out
    assert main(["models", "--model", FACTORY]) == 2
    assert "pass --input-shape" in _err(capsys)
