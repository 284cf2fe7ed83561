"""Report generation from a tiny real sweep: files, figures, sections, frontier membership."""

import json
import re

import numpy as np

from nopeek.cli.main import main
from nopeek.eval.frontier import pareto_mask
from nopeek.eval.report import write_report


def _by_setting(rows, key):
    """Mean over seeds of per-run values, per setting, computed straight from the rows."""
    per_run = {}
    for r in rows:
        per_run.setdefault((r["setting"], r["run"]), []).append(key(r))
    out = {}
    for (setting, _), vals in per_run.items():
        out.setdefault(setting, []).append(max(vals))
    return {s: float(np.mean(v)) for s, v in out.items()}


def test_report_from_a_tiny_sweep(tiny_sweep, tmp_path):
    sweep, rows = tiny_sweep
    md_path = write_report([sweep], tmp_path / "rep")
    md = md_path.read_text()
    for heading in ("Settings", "Leakage report card", "Privacy-utility frontier",
                    "NoPeek vs alpha", "Reconstructions: inverse-network",
                    "Reconstructions: white-box", "How to read this report"):  # fmt: skip
        assert heading in md, heading
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(images) >= 4
    for image in images:
        assert (tmp_path / "rep" / image).stat().st_size > 1000, image
    html = (tmp_path / "rep" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(images)
    assert "<table>" in html and "undefended" in html
    card = md.split("### Leakage report card")[1].split("### ")[0]
    said = "can query your client model and has 360 samples of its own reconstructs your test "
    assert said + "images at SSIM 0." in card and "(a blind guess: 0.3" in card
    assert "costs no accuracy" in card or "points of test accuracy" in card
    for internal in ("best_ssim", "label_auc", "undefended (undefended)", "baseline_ssim"):
        assert internal not in card, internal

    # the frontier flags match the non-dominated settings computed independently from the rows
    section = json.loads((tmp_path / "rep" / "report.json").read_text())["sections"][0]
    acc = _by_setting(rows, lambda r: r["test_accuracy"])
    ssim = _by_setting(rows, lambda r: r["ssim"])
    names = [s["setting"] for s in section["settings"]]
    expected = pareto_mask([acc[n] for n in names], [ssim[n] for n in names]).tolist()
    assert [s["pareto"]["best_ssim"] for s in section["settings"]] == expected
    leak = _by_setting(rows, lambda r: r["leak"])
    expected = pareto_mask([acc[n] for n in names], [leak[n] for n in names]).tolist()
    assert [s["pareto"]["leakage"] for s in section["settings"]] == expected
    for s in section["settings"]:
        assert abs(s["accuracy"]["mean"] - acc[s["setting"]]) < 1e-12
        assert abs(s["best_ssim"]["mean"] - ssim[s["setting"]]) < 1e-12
        assert 0.5 <= s["score"] <= 1.0


def test_report_cli_and_missing_sweep(tiny_sweep, tmp_path, capsys):
    sweep, _ = tiny_sweep
    assert main(["report", "--sweep", str(sweep), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.md").is_file()
    assert "report ->" in capsys.readouterr().out
    assert main(["report", "--sweep", str(tmp_path / "nothing"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "nopeek sweep" in err
