"""Leakage in the data's own terms on a table: breast-cancer written as a CSV file, attacked,
tuned to a leak budget and reported on.

The table holds breast-cancer's 10 "mean" features and a 0/1 flag derived from one of them. On
all 30 features the first layer of the tabular MLP (64 ReLU units) leaves about half its units
active, so for some rows fewer units than features carry them: no attacker can tell those rows
from others with the same activations, and the white-box attack reads leak ~0.93 there. With 11
features every row is determined and the white-box attack recovers them exactly.
"""

import contextlib
import csv
import io
import json

import pytest
from sklearn.datasets import load_breast_cancer

from nopeek.cli.main import main

TINY = ["--epochs", "2", "--dcor-samples", "40", "--record-samples", "64", "--quiet"]
WHITE_BOX = ["--attack", "white-box:steps=300,n_samples=16"]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    bunch = load_breast_cancer()
    names = [n.replace(" ", "_") for n in bunch.feature_names[:10]]
    large = bunch.data[:, 0] > 14.0  # mean radius above 14: a flag column
    path = tmp_path_factory.mktemp("table") / "cancer.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*names, "large", "diagnosis"])
        for row, flag, label in zip(bunch.data[:, :10], large, bunch.target):
            writer.writerow([*row.tolist(), int(flag), int(label)])
    return ["--dataset", f"csv:{path}", "--target", "diagnosis"]


def _tune(table, out, *budget):
    args = ["tune", *table, *TINY, *WHITE_BOX, "--search", "cut-noise=0.5", "--iterations", "0"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main([*args, *budget, "--out", str(out)])
    return code, printed.getvalue(), json.loads((out / "tune.json").read_text())


@pytest.fixture(scope="module")
def tuned(table, tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "t"
    return out, _tune(table, out, "--max-leak", "0.2")


def test_white_box_recovers_every_row_of_an_undefended_run(tuned):
    out, _ = tuned
    r = json.loads((out / "runs" / "alpha0-seed0" / "attacks" / "white-box.json").read_text())
    assert r["ssim"] is None and r["leak"] >= 0.99 and r["r2"] >= 0.99
    assert r["rows_within_tolerance"] == 1.0 and r["baseline_rows_within_tolerance"] < 0.5
    assert r["categorical_columns"] == 1 and r["categorical_exact"] == 1.0
    assert r["tolerance"] == 0.05 and len(r["r2_per_feature"]) == 11


def test_tune_on_a_leak_budget_never_returns_the_undefended_setting(tuned):
    _, (code, printed, result) = tuned
    assert code == 0 and result["best"] != "alpha0"
    undefended = next(c for c in result["candidates"] if c["setting"] == "alpha0")
    assert not undefended["meets_budget"] and undefended["misses"]["leak"] > 0.7
    assert "undefended: accuracy 0." in printed and "leak 1.000" in printed


def test_an_unreachable_budget_names_the_closest_setting(tuned, table):
    out, _ = tuned  # the same sweep: its runs are reused
    code, printed, result = _tune(table, out, "--max-leak", "0", "--max-accuracy-drop", "0")
    assert code == 0 and result["best"] is None and result["closest"] is not None
    (line,) = [x for x in printed.splitlines() if x.startswith("no setting")]
    assert f"closest: {result['closest_label']} (" in line and "above budget 0.000 by" in line
    assert set(result["closest_misses"]) <= {"leak", "accuracy_drop"}


def test_the_report_card_speaks_of_rows(tuned, tmp_path):
    out, _ = tuned
    assert main(["report", "--sweep", str(out), "--out", str(tmp_path / "r")]) == 0
    card = (tmp_path / "r" / "report.md").read_text().split("### Leakage report card")[1]
    said = "holds a copy of your client model recovers your rows with R² 1.00 (rows within 5 % "
    assert said + "of every feature's range: 100 %; a blind guess: 0 %)" in card
    assert "of your categorical values exactly" in card and "**leaks**" in card
    assert "SSIM" not in card.split("### ")[0]


def test_max_ssim_on_a_table_is_refused_in_one_line(table, tmp_path, capsys):
    args = ["tune", *table, *TINY, "--max-ssim", "0.3", "--out", str(tmp_path / "t")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--max-leak" in err
    assert not (tmp_path / "t" / "runs").exists()
