"""``nopeek train --config FILE``: a TOML file or a run's config.json, flags override it."""

import json

import pytest
import torch

from nopeek.cli.main import main

TINY = ["--dataset", "digits", "--epochs", "2", "--max-train", "200", "--quiet"]
TINY += ["--record-samples", "8", "--dcor-samples", "16"]
TIMING = ("train_seconds",)  # wall-clock: the one number a replay cannot repeat


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


def _metrics(run) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if not any(t in k for t in TIMING)}


def test_a_run_replays_bit_for_bit_from_its_config_json(tmp_path):
    first, again = tmp_path / "first", tmp_path / "again"
    argv = [*TINY, "--alpha", "0.5", "--seed", "3", "--defense", "max-norm", "--one-vs-rest", "1"]
    assert main(["train", *argv, "--out", str(first)]) == 0
    config = first / "config.json"
    assert main(["train", "--config", str(config), "--quiet", "--out", str(again)]) == 0
    assert json.loads((again / "config.json").read_text()) == json.loads(config.read_text())
    assert _metrics(again) == _metrics(first)
    states = [torch.load(r / "checkpoint.pt", weights_only=True) for r in (first, again)]
    for key in ("parties", "optimizers"):  # every party's weights and optimizer state
        _assert_same(states[0][key], states[1][key], key)


def _assert_same(a, b, where: str) -> None:
    """``a`` and ``b`` equal exactly: tensors bit for bit, inside dicts and lists."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_toml_fields_with_flags_overriding_them(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        'dataset = "digits"\nalpha = 1\nepochs = 5\nmax_train = 200\n'
        'defenses = ["max-norm"]\none_vs_rest = 0\n'
    )
    out = tmp_path / "run"
    argv = ["--config", str(toml), "--epochs", "1", "--dcor-samples", "16", "--record-samples", "8"]
    assert main(["train", *argv, "--quiet", "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["epochs"] == 1  # the flag wins
    assert saved["alpha"] == 1.0 and saved["max_train"] == 200 and saved["one_vs_rest"] == 0
    assert saved["defenses"] == ["max-norm"] and saved["model"] == "digits-cnn"


@pytest.mark.parametrize(
    ("text", "name", "match"),
    [
        ("epoch = 3\n", "bad.toml", r"bad\.toml: unknown key 'epoch'; valid keys: dataset, model"),
        ('epochs = "3"\n', "bad.toml", r"field 'epochs' must be an integer, got '3'"),
        ("epochs = \n", "bad.toml", r"cannot read --config .*bad\.toml"),
        ('{"alphaa": 1}', "bad.json", r"bad\.json: unknown key 'alphaa'"),
        ("[1, 2]", "bad.json", r"must hold a table of config fields"),
    ],
)
def test_a_bad_config_file_is_one_line_exit_2(tmp_path, capsys, text, name, match):
    import re

    path = tmp_path / name
    path.write_text(text)
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), *TINY, "--out", str(out)]) == 2
    assert re.search(match, _err(capsys))
    assert not out.exists()


def test_a_missing_config_file(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "none.toml"), "--out", str(out)]) == 2
    assert "no such file" in _err(capsys) and not out.exists()


def test_defense_values_join_specs_with_plus_as_in_sweep(tmp_path):
    out = tmp_path / "run"
    argv = [*TINY, "--one-vs-rest", "0", "--defense", "cut-noise:sigma=0.1+max-norm"]
    assert main(["train", *argv, "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["defenses"] == ["cut-noise:sigma=0.1", "max-norm"]
