"""Files that parse but hold the wrong contents, and seeds out of range: one line, exit 2.

Each saved file (config.json, checkpoint.pt, observations.pt, results.json, sweep.json) is
written with one wrong field and read by its real consumer (``nopeek train --resume``,
``nopeek attack``, ``nopeek report --sweep``); the error names the file and the field.
"""

import json
import re
import shutil

import pytest
import torch

from nopeek import TrainConfig, train
from nopeek.attacks import run_attack
from nopeek.cli.main import main
from nopeek.config import SEED_MAX
from nopeek.errors import ConfigError
from nopeek.rundir.checkpoint import SCHEMA

TINY = ["--epochs", "1", "--max-train", "100", "--dcor-samples", "50", "--quiet"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A finished tiny run and a finished tiny sweep (no attacks), never modified."""
    root = tmp_path_factory.mktemp("schemas")
    assert main(["train", *TINY, "--out", str(root / "run")]) == 0
    argv = ["sweep", *TINY, "--attack", "none", "--out", str(root / "sweep")]
    assert main(argv) == 0
    return root


@pytest.fixture
def run(pristine, tmp_path):
    shutil.copytree(pristine / "run", tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def sweep(pristine, tmp_path):
    shutil.copytree(pristine / "sweep", tmp_path / "sweep")
    return tmp_path / "sweep"


def _fails(argv, capsys, *patterns) -> str:
    """Run the CLI; it must exit 2 with one stderr line matching every pattern."""
    capsys.readouterr()
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for pattern in patterns:
        assert re.search(pattern, err), (pattern, err)
    return err


def _edit_json(path, change):
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data)))


# --- config.json -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d | {"epochs": "3"}, r"field 'epochs' must be an integer, got '3'"),
        (lambda d: d | {"alpha": None}, r"field 'alpha' must be a number, got None"),
        (lambda d: d | {"defenses": "max-norm"}, r"field 'defenses' must be a list of strings"),
        (lambda d: d | {"one_vs_rest": 1.5}, r"field 'one_vs_rest' must be an integer or null"),
        (lambda d: d | {"shuffle_labels": 0}, r"field 'shuffle_labels' must be true or false"),
        (lambda d: d | {"batch_size": 0}, r"config\.json: batch size must be >= 1"),
        (lambda d: d | {"colour": "red"}, r"config\.json has unknown config keys \['colour'\]"),
        (lambda d: [d], r"config\.json must hold a JSON object"),
    ],
)
@pytest.mark.parametrize("consumer", ["resume", "attack"])
def test_a_wrong_config_field_is_named(run, capsys, change, match, consumer):
    _edit_json(run / "config.json", change)
    argv = {
        "resume": ["train", "--resume", "--quiet", "--out", str(run)],
        "attack": ["attack", "--run", str(run), "--attack", "white-box", "--steps", "1"],
    }[consumer]
    _fails(argv, capsys, re.escape(str(run / "config.json")), match)
    assert not (run / "attacks").exists()


def test_config_garbage_bytes(run, capsys):
    (run / "config.json").write_bytes(b"\x80\x81 not json")
    _fails(["train", "--resume", "--out", str(run)], capsys, r"cannot read .*config\.json")
    _fails(["attack", "--run", str(run), "--attack", "white-box"], capsys, r"cannot read")


# --- checkpoint.pt ---------------------------------------------------------------------------


def _edit_checkpoint(run, change):
    path = run / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


@pytest.mark.parametrize("key", sorted(SCHEMA))
def test_a_wrong_checkpoint_field_is_named_on_resume(run, capsys, key):
    _edit_checkpoint(run, lambda s: s.__setitem__(key, "oops"))
    pattern = rf"checkpoint \S*checkpoint\.pt field '{key}' must be .*, got 'oops'; train"
    _fails(["train", "--resume", "--out", str(run)], capsys, pattern)


def test_a_missing_checkpoint_field_and_a_foreign_state_dict(run, capsys):
    _edit_checkpoint(run, lambda s: s.pop("history"))
    _fails(["train", "--resume", "--out", str(run)], capsys, r"has no field 'history'")
    _edit_checkpoint(run, lambda s: s.__setitem__("history", {"train_loss": [1.0]}))

    def bad_weights(state):
        state["parties"][sorted(state["parties"])[0]] = [{"weight": [1, 2]}]

    _edit_checkpoint(run, bad_weights)
    argv = ["attack", "--run", str(run), "--attack", "white-box", "--steps", "1"]
    _fails(argv, capsys, r"checkpoint \S+ field 'parties' must be")
    assert not (run / "attacks").exists()


def test_a_truncated_checkpoint(run, capsys):
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    err = _fails(["train", "--resume", "--out", str(run)], capsys, r"checkpoint \S+ is corrupt")
    assert "--overwrite" in err


# --- observations.pt -------------------------------------------------------------------------


def _edit_observations(run, change):
    path = run / "observations.pt"
    groups = torch.load(path, weights_only=True)
    torch.save(change(groups), path)


def _first(groups):
    return groups[sorted(groups)[0]]


def _without(group, name):
    return {k: v for k, v in group.items() if k != name}


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda g: [1, 2], r"must hold a dict of groups"),
        (lambda g: {"conv2": _first(g)}, r"has a group named 'conv2'"),
        (lambda g: {k: _without(v, "ids") for k, v in g.items()}, r"field 'ids' must be"),
        (lambda g: {k: v | {"ids": v["ids"].float()} for k, v in g.items()}, r"field 'ids'"),
        (lambda g: {k: v | {"step": v["step"][:1]} for k, v in g.items()}, r"different lengths"),
        (lambda g: {k: "tensor" for k in g}, r"must be a dict of tensors"),
    ],
)
def test_wrong_observations_are_named(run, capsys, change, match):
    _edit_observations(run, change)
    argv = ["attack", "--run", str(run), "--attack", "white-box", "--steps", "1"]
    _fails(argv, capsys, r"observations file \S+observations\.pt", match)
    assert not (run / "attacks").exists()


# --- results.json and sweep.json -------------------------------------------------------------


def _row(change):
    return lambda rows: [change(rows[0]), *rows[1:]]


@pytest.mark.parametrize(
    "name, change, match",
    [
        ("results.json", lambda rows: {"rows": rows}, r"results\.json must hold a JSON list"),
        ("results.json", _row(lambda r: r | {"seed": "0"}), r"row 0 field 'seed' must be an int"),
        (
            "results.json",
            _row(lambda r: {k: v for k, v in r.items() if k != "test_accuracy"}),
            r"row 0 has no field 'test_accuracy'",
        ),
        ("results.json", _row(lambda r: r | {"dcor_test": "x"}), r"field 'dcor_test' must be"),
        ("sweep.json", lambda d: d | {"seeds": "0"}, r"sweep\.json field 'seeds' must be a list"),
        ("sweep.json", lambda d: d | {"seeds": [-1]}, r"field 'seeds' must be an integer from 0"),
        ("sweep.json", lambda d: d | {"attacks": None}, r"sweep\.json field 'attacks' must be"),
        ("sweep.json", lambda d: {"base": d["base"]}, r"sweep\.json has no field 'settings'"),
        (
            "sweep.json",
            lambda d: d | {"settings": [{"alpha": "0", "defenses": []}]},
            r"sweep\.json settings\[0\] field 'alpha' must be a number",
        ),
        (
            "sweep.json",
            lambda d: d | {"base": d["base"] | {"epochs": 0}},
            r"sweep\.json field 'base': epochs must be > 0",
        ),
    ],
)
def test_wrong_sweep_files_are_named_by_the_report(sweep, tmp_path, capsys, name, change, match):
    _edit_json(sweep / name, change)
    report = tmp_path / "report"
    _fails(["report", "--sweep", str(sweep), "--out", str(report), "--quiet"], capsys, match)
    assert not report.exists()


@pytest.mark.parametrize("name", ["results.json", "sweep.json"])
def test_garbage_sweep_files(sweep, tmp_path, capsys, name):
    (sweep / name).write_bytes(b"\xff\xfe garbage")
    report = tmp_path / "report"
    argv = ["report", "--sweep", str(sweep), "--out", str(report)]
    _fails(argv, capsys, re.escape(str(sweep / name)))
    assert not report.exists()


# --- seeds -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, SEED_MAX])
def test_boundary_seeds_train_and_attack(tmp_path, seed):
    config = TrainConfig(
        dataset="digits",
        epochs=1,
        max_train=100,
        dcor_samples=50,
        seed=seed,
        defenses=["cut-noise:gaussian,sigma=0.5,clip=1"],
    )
    result = train(config, tmp_path / "run", quiet=True)
    assert result.metrics["seed"] == seed
    attack = run_attack(tmp_path / "run", "white-box", steps=1, n_samples=4, seed=seed)
    assert attack.seed == seed


@pytest.mark.parametrize("seed", [-1, SEED_MAX + 1, 2**64])
def test_out_of_range_seeds_are_refused_everywhere(tmp_path, capsys, seed):
    with pytest.raises(ConfigError, match=r"seed must be an integer from 0 to 2\*\*31 - 1"):
        TrainConfig(seed=seed).validate()
    out = tmp_path / "run"
    _fails(["train", *TINY, "--seed", str(seed), "--out", str(out)], capsys, r"seed must be")
    assert not out.exists()
    _fails(["sweep", *TINY, "--seeds", f"0,{seed}", "--out", str(out)], capsys, r"--seeds must")
    assert not out.exists()


def test_out_of_range_attack_seed_is_refused(run, capsys):
    argv = ["attack", "--run", str(run), "--attack", "white-box", "--seed", str(SEED_MAX + 1)]
    _fails(argv, capsys, r"--seed must be an integer from 0 to 2\*\*31 - 1 = 2147483647")
    assert not (run / "attacks").exists()
