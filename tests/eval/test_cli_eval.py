"""``nopeek sweep`` / ``report`` / ``tune`` end to end on tiny settings, and their user errors."""

import csv
import json

import pytest

from nopeek.cli.main import main

TINY = ["--epochs", "2", "--dcor-samples", "40", "--record-samples", "64", "--quiet"]
ATTACK = ["--attack", "inverse-network:steps=10,width=8"]


def _err(capsys):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_sweep_then_report(tmp_path, capsys):
    out = tmp_path / "s"
    args = ["sweep", *TINY, *ATTACK, "--alpha", "0,1", "--defense", "none",
            "--defense", "cut-noise:gaussian,sigma=0.1,clip=1", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "undefended" in printed and "results.csv" in printed
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    # settings: undefended, noise, alpha=1, alpha=1 + noise (one seed, one attack)
    assert sorted(r["label"] for r in rows) == sorted([
        "undefended", "cut-noise:gaussian,sigma=0.1,clip=1", "alpha=1",
        "alpha=1 + cut-noise:gaussian,sigma=0.1,clip=1"])  # fmt: skip
    assert {r["defenses"] for r in rows} == {"", "cut-noise:gaussian,sigma=0.1,clip=1"}
    assert main(["report", "--sweep", str(out), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "cut-noise (gaussian,clip=1) vs sigma" not in md  # one sigma only: no curve
    assert "NoPeek vs alpha" in md


@pytest.mark.parametrize(
    "args, message",
    [
        (["--attack", "norm"], "one-vs-rest"),
        (["--attack", "nope"], "unknown attack 'nope'"),
        (["--alpha", "0,x"], "--alpha takes comma-separated numbers"),
        (["--alpha", "-1"], "alpha must be >= 0"),
        (["--seeds", "0,0"], "distinct"),
        (["--defense", "marvell:s=1"], "binary"),
        (["--defense", "bogus"], "unknown defense"),
        (["--defense", "max-norm+"], "empty defense"),
        (["--jobs", "0"], "--jobs must be >= 1"),
    ],
)
def test_sweep_user_errors_are_one_line(args, message, tmp_path, capsys):
    assert main(["sweep", *TINY, *args, "--out", str(tmp_path / "s")]) == 2
    assert message in _err(capsys)
    assert not (tmp_path / "s" / "runs").exists()


def test_tune_finds_the_undefended_setting_within_a_loose_budget(tmp_path, capsys):
    out = tmp_path / "t"
    certify = ["--steps", "10", "--attack-budget", "1"]  # the re-attack, kept tiny here
    assert main(["tune", *TINY, *ATTACK, *certify, "--max-ssim", "0.999", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "best: undefended" in printed and "re-attack undefended: searched worst" in printed
    result = json.loads((out / "tune.json").read_text())
    assert result["best"] == "alpha0" and len(result["candidates"]) == 1
    cert = result["certificate"]
    assert cert["certified"] and result["margin"] == cert["margin"] == 0.999 - cert["ssim"]
    assert result["candidates"][0]["certified"] is True
    assert (out / "runs" / "alpha0-seed0" / "attacks" / "inverse-network.strongest.json").is_file()


def test_tune_says_when_nothing_meets_the_budget(tmp_path, capsys):
    args = ["tune", *TINY, *ATTACK, "--max-ssim", "0.01", "--search", "alpha=1",
            "--iterations", "0", "--out", str(tmp_path / "t")]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    (line,) = [x for x in printed.splitlines() if x.startswith("no setting")]
    assert line.startswith("no setting in the search space meets the budget; closest: ")
    assert "above budget 0.010 by" in line
    assert "data-free guess" in printed  # 0.01 is below what a mean image scores
    result = json.loads((tmp_path / "t" / "tune.json").read_text())
    assert result["best"] is None and result["closest"] in {"alpha0", "alpha1"}
    assert set(result["closest_misses"]) == {"ssim"}
    assert [c["meets_budget"] for c in result["candidates"]] == [False, False]


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give a budget"),
        (["--max-ssim", "2"], "--max-ssim must be in (0, 1]"),
        (["--max-leak", "1"], "--max-leak must be in [0, 1)"),
        (["--max-leak", "0.2", "--max-accuracy-drop", "-1"], "percentage points"),
        (["--max-label-auc", "0.6"], "one-vs-rest"),
        (["--max-ssim", "0.3", "--search", "nope"], "unknown --search knob"),
    ],
)
def test_tune_user_errors(args, message, tmp_path, capsys):
    assert main(["tune", *TINY, *args, "--out", str(tmp_path / "t")]) == 2
    assert message in _err(capsys)
