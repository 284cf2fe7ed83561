"""nopeek.rundir, the reading side: a finished run or sweep folder read back through
:meth:`RunDir.open` (one method per file), and each bad or missing file one line naming the
file and the fix. The writing side (markers, staging, swaps) is in ``test_rundir.py``."""

import json

import pytest
import torch

from nopeek import TrainConfig, train
from nopeek.attacks import run_attack
from nopeek.cli.main import main
from nopeek.errors import CheckpointError, ConfigError, ThreatModelError
from nopeek.rundir import RunDir, checkpoint

# ---------------------------------------------------------------- reading


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny finished run with one attack result (never modified)."""
    out = tmp_path_factory.mktemp("reading") / "run"
    train(TrainConfig(epochs=1, max_train=100, dcor_samples=50), out, quiet=True)
    run_attack(out, "white-box", steps=1, n_samples=4)
    return out


def test_every_file_of_a_finished_run_reads_back_through_one_rundir(finished):
    run = RunDir.open(finished)
    saved = json.loads((finished / "config.json").read_text())
    assert run.config() == TrainConfig.from_dict(saved) and run.config().epochs == 1
    assert run.metrics() == json.loads((finished / "metrics.json").read_text())
    raw = torch.load(finished / "checkpoint.pt", weights_only=True)
    state = run.load_checkpoint()
    assert run.checkpoint_path == finished / "checkpoint.pt" == finished / checkpoint.FILENAME
    assert state["epoch"] == raw["epoch"] == 1
    for party, modules in raw["parties"].items():
        for got, want in zip(state["parties"][party], modules, strict=True):
            assert all(torch.equal(got[k], want[k]) for k in want)
    groups = torch.load(finished / "observations.pt", weights_only=True)
    observed = run.observations().groups
    assert observed.keys() == groups.keys()
    assert all(torch.equal(observed[k]["tensor"], groups[k]["tensor"]) for k in groups)
    attack = json.loads((finished / "attacks" / "white-box.json").read_text())
    assert run.has_attack("white-box") and not run.has_attack("norm")
    assert run.attack_result("white-box") == attack and attack["attack"] == "white-box"
    assert run.attack_results() == {"white-box": attack}
    assert RunDir.open(finished, "run").config() == run.config()


def test_a_sweep_folder_reads_back(tmp_path):
    spec = {"base": {}, "settings": [], "seeds": [0], "attacks": []}
    rows = [{"setting": "a", "test_accuracy": 0.5}]
    with RunDir(tmp_path / "sweep", "sweep").writing() as where:
        (where / RunDir.SWEEP).write_text(json.dumps(spec))
        (where / RunDir.RESULTS).write_text(json.dumps(rows))
    sweep = RunDir.open(tmp_path / "sweep", "sweep")
    assert sweep.sweep() == spec and sweep.results() == rows


def _run_folder(path, files):
    with RunDir(path, "run").writing() as where:
        for name, data in files.items():
            (where / name).parent.mkdir(exist_ok=True)
            (where / name).write_bytes(data)
    return path


_CONFIG = json.dumps(TrainConfig().to_dict()).encode()
_READS = {  # files of a run folder -> (how it is read, the error and its one line)
    "missing config": (
        {},
        lambda r: r.config(),
        ConfigError,
        r"cannot read \S+/config\.json \(FileNotFoundError\); is \S+ a finished nopeek run\?$",
    ),
    "corrupt config": (
        {"config.json": b"{not json"},
        lambda r: r.config(),
        ConfigError,
        r"cannot read \S+/config\.json \(JSONDecodeError\); is \S+ a finished nopeek run\?$",
    ),
    "wrong config field": (
        {"config.json": _CONFIG.replace(b'"epochs": 30', b'"epochs": "30"')},
        lambda r: r.config(),
        ConfigError,
        r"config\.json field 'epochs' must be an integer, got '30'; fix it or train the run anew",
    ),
    "corrupt metrics": (
        {"metrics.json": b"\xff\xfe"},
        lambda r: r.metrics(),
        ConfigError,
        r"cannot read \S+/metrics\.json \(UnicodeDecodeError\); train the run anew",
    ),
    "metrics not an object": (
        {"metrics.json": b"[1]"},
        lambda r: r.metrics(),
        ConfigError,
        r"metrics\.json must hold a JSON object, got \[1\]; train the run anew with --overwrite$",
    ),
    "missing attack": (
        {},
        lambda r: r.attack_result("white-box"),
        ConfigError,
        r"cannot read \S+/attacks/white-box\.json \(FileNotFoundError\); rerun the attack with "
        r"`nopeek attack --run \S+`$",
    ),
    "missing observations": (
        {},
        lambda r: r.observations(),
        ThreatModelError,
        r"\S+ has no observations\.pt; let its training finish first$",
    ),
    "missing checkpoint": (
        {},
        lambda r: r.load_checkpoint(),
        CheckpointError,
        r"no checkpoint at \S+/checkpoint\.pt; train the run anew with --overwrite$",
    ),
    "corrupt checkpoint": (
        {"checkpoint.pt": b"PK\x03\x04 not a zip"},
        lambda r: r.load_checkpoint(),
        CheckpointError,
        r"checkpoint \S+/checkpoint\.pt is corrupt, truncated or not nopeek's",
    ),
}


@pytest.mark.parametrize("case", sorted(_READS))
def test_a_bad_run_file_is_one_line_naming_the_file_and_the_fix(tmp_path, case):
    files, read, error, pattern = _READS[case]
    run = RunDir.open(_run_folder(tmp_path / "run", files))
    with pytest.raises(error, match=pattern) as exc:
        read(run)
    assert "\n" not in str(exc.value)


def test_a_folder_s_own_fix_ends_every_read_error(tmp_path):
    path = _run_folder(tmp_path / "run", {"config.json": b"[]", "metrics.json": b"{"})
    run = RunDir.open(path, fix="delete it and rerun the sweep")
    with pytest.raises(ConfigError, match=r"config\.json must hold .*; delete it and rerun"):
        run.config()
    with pytest.raises(ConfigError, match=r"metrics\.json \(JSONDecodeError\); delete it and"):
        run.metrics()


def test_a_missing_folder_or_one_of_another_kind_is_refused_when_opened(tmp_path):
    with pytest.raises(ConfigError, match=r"no run directory at \S+; train one first with"):
        RunDir.open(tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"no sweep at \S+; run `nopeek sweep --out \S+` first"):
        RunDir.open(tmp_path / "missing", "sweep")
    run = _run_folder(tmp_path / "run", {})
    with RunDir(tmp_path / "sweep", "sweep").writing():
        pass
    with pytest.raises(ConfigError, match=r"sweep is a nopeek sweep folder, not a run folder; "):
        RunDir.open(tmp_path / "sweep", "run")
    with pytest.raises(ConfigError, match=r"run is a nopeek run folder, not a sweep folder; pass"):
        RunDir.open(run, "sweep")
    (tmp_path / "mine").mkdir()  # no marker: read as it is, its files' errors speak for it
    with pytest.raises(ConfigError, match=r"cannot read \S+mine/config\.json"):
        RunDir.open(tmp_path / "mine").config()


def test_a_sweep_passed_as_a_run_is_one_cli_line(tmp_path, capsys):
    with RunDir(tmp_path / "sweep", "sweep").writing():
        pass
    assert main(["attack", "--run", str(tmp_path / "sweep"), "--attack", "white-box"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a run folder; pass one of its runs" in err, err


@pytest.mark.parametrize(
    "files, read, pattern",
    [
        ({}, lambda s: s.results(), r"no results in \S+; run `nopeek sweep --out \S+` first$"),
        (
            {"results.json": b'{"rows": []}'},
            lambda s: s.results(),
            r"results\.json must hold a JSON list of rows, got \{'rows': \[\]\}; rerun the same",
        ),
        (
            {"sweep.json": b"\xff"},
            lambda s: s.sweep(),
            r"is not a finished sweep \(cannot read \S+/sweep\.json: UnicodeDecodeError\); run",
        ),
    ],
)
def test_a_bad_sweep_file_is_one_line_naming_the_file_and_the_fix(tmp_path, files, read, pattern):
    with RunDir(tmp_path / "sweep", "sweep").writing() as where:
        for name, data in files.items():
            (where / name).write_bytes(data)
    with pytest.raises(ConfigError, match=pattern) as exc:
        read(RunDir.open(tmp_path / "sweep", "sweep"))
    assert "\n" not in str(exc.value)
