"""Compressors as a sweep dimension: settings, sweep.json, summaries (bytes per sample), the
privacy-utility-communication frontier, the "acts as a defense" verdict, and the report section
from a real sweep run by ``nopeek sweep --compress``."""

from __future__ import annotations

import json
import math

import pytest

from nopeek.cli.main import main
from nopeek.config import TrainConfig
from nopeek.errors import ConfigError
from nopeek.eval import communication as C
from nopeek.eval.results import make_rows
from nopeek.eval.settings import Setting, make_settings
from nopeek.eval.summary import summarize
from nopeek.eval.sweep import SweepSpec


def test_compressors_cross_alphas_and_defenses():
    settings = make_settings([0, 1], ["none"], ["none", "forward=topk:0.10", "int4"])
    assert [s.label for s in settings] == [
        "undefended",
        "compress forward=topk:0.1",
        "compress forward=int4,backward=int4",
        "alpha=1",
        "alpha=1 + compress forward=topk:0.1",
        "alpha=1 + compress forward=int4,backward=int4",
    ]
    assert settings[0].slug == "alpha0" and settings[3].slug == "alpha1"  # as before compressors
    assert settings[1].slug == "alpha0_c-forwardtopk-0.1"
    config = settings[4].config(TrainConfig(), seed=3)
    assert (config.alpha, config.compress, config.seed) == (1.0, "forward=topk:0.1", 3)
    assert settings[0].config(TrainConfig(), seed=0).compress is None
    with pytest.raises(ConfigError, match=r"unknown compressor 'topq'; choose one of: bf16"):
        make_settings([0], compress=["forward=topq:0.1"])


def test_sweep_json_keeps_the_compressors_and_reads_older_sweeps():
    spec = SweepSpec(TrainConfig().resolved(), make_settings([0], compress=["fp16"]), [0], [])
    again = SweepSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert again.settings == spec.settings
    old = spec.to_json()
    for item in old["settings"]:
        del item["compress"]
    assert [s.compress for s in SweepSpec.from_json(old).settings] == ["", ""]


def _rows(setting: Setting, seed: int, acc: float, leak: float, up: float, down: float):
    base = {"setting": setting.slug, "label": setting.label, "run": f"runs/{setting.slug}-{seed}",
            "alpha": setting.alpha, "defenses": "+".join(setting.defenses), "seed": seed,
            "compress": setting.compress or None}  # fmt: skip
    metrics = {"test_accuracy": acc, "train_samples": 100, "bytes_client_to_server": up,
               "bytes_server_to_client": down}  # fmt: skip
    return make_rows(base, metrics, {"white-box": {"leak": leak}})


PLAIN, TOPK, FP16 = Setting(), Setting(compress="forward=topk:0.1"), Setting(compress="fp16")


def _summaries():
    rows = _rows(PLAIN, 0, 0.95, 0.50, 204800, 204800) + _rows(PLAIN, 1, 0.93, 0.54, 204800, 204800)
    rows += _rows(TOPK, 0, 0.90, 0.30, 41600, 204800) + _rows(TOPK, 1, 0.88, 0.34, 41600, 204800)
    rows += _rows(FP16, 0, 0.95, 0.51, 102400, 102400) + _rows(FP16, 1, 0.93, 0.53, 102400, 102400)
    return summarize(rows)


def test_bytes_per_sample_and_the_defense_verdict():
    plain, topk, fp16 = _summaries()
    assert plain.undefended and not topk.undefended
    assert (plain.bytes_per_sample.mean, topk.bytes_per_sample.mean) == (4096, 2464)
    assert C.acts_as_defense(topk, [plain, topk, fp16]) is True  # 0.32 < 0.52 - 0.028
    assert C.acts_as_defense(fp16, [plain, topk, fp16]) is False  # 0.52 vs 0.52
    assert C.acts_as_defense(plain, [plain, topk, fp16]) is None
    assert C.frontier([plain, topk, fp16]) == [False, True, True]  # fp16 dominates plain
    said = C.sentences([plain, topk, fp16])
    assert said[0].startswith("**forward=topk:0.1** also acts as a defense: strongest leak 0.320")
    assert said[1].startswith("**fp16** is no defense: strongest leak 0.520 against 0.520")
    _, _, rows = C.table([plain, topk, fp16])
    assert rows[1][2:6] == ["41,600", "204,800", "2,464", "1.7"]
    assert rows[1][-1] == "yes (0.320 vs 0.520 uncompressed)"


def test_the_frontier_figure_has_both_panels(tmp_path):
    summaries = _summaries()
    fig = C.draw(summaries)
    leak_ax, acc_ax = fig.axes[0], fig.axes[1]
    assert leak_ax.get_xscale() == "log" and "strongest leak" in leak_ax.get_ylabel()
    assert "test accuracy" in acc_ax.get_ylabel()
    assert [t.get_text() for t in leak_ax.texts] == ["1", "2", "3"]
    assert C.section(summaries[:1], tmp_path, "s") == []  # nothing compressed: no section
    blocks = C.section(summaries, tmp_path, "s")
    assert blocks[1] == ("img", "figures/s-communication.png", "leak and accuracy against bytes")
    assert (tmp_path / "figures" / "s-communication.png").stat().st_size > 10_000


def test_nopeek_sweep_compress_counts_the_analytic_bytes_and_reports_them(tmp_path, capsys):
    out, report = tmp_path / "sweep", tmp_path / "report"
    argv = ["sweep", "--epochs", "1", "--max-train", "150", "--dcor-samples", "32", "--quiet"]
    argv += ["--compress", "none", "--compress", "forward=topk:0.1,backward=int4"]
    argv += ["--attack", "inverse-network:steps=5,width=8", "--n-samples", "8", "--out", str(out)]
    assert main(argv) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["compress"] for r in rows] == [None, "forward=topk:0.1,backward=int4"]
    d, n = 32 * 4 * 4, 150
    assert rows[0]["bytes_client_to_server"] == n * d * 4
    assert rows[1]["bytes_client_to_server"] == n * math.ceil(0.1 * d) * 8
    assert rows[1]["bytes_server_to_client"] == n * (4 + 1 + d // 2)
    assert main(["report", "--sweep", str(out), "--out", str(report)]) == 0
    text = (report / "report.md").read_text()
    assert "### Privacy-utility-communication frontier" in text
    assert "| 2 | compress forward=topk:0.1,backward=int4 | 62,400 | 39,150 | 677 | 6.1 |" in text
    data = json.loads((report / "report.json").read_text())["sections"][0]["settings"]
    assert data[1]["bytes_per_sample"]["mean"] == 677.0
