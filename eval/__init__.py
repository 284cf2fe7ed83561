"""nopeek.eval: sweeps over defenses x attacks, Pareto frontiers, trade-off scores, reports, tuning.

The public API::

    from nopeek.eval import SweepSpec, make_settings, run_sweep, summarize, write_report
    spec = SweepSpec(base=TrainConfig(cut="conv2").resolved(), settings=make_settings([0, 2, 4]),
                     seeds=[0, 1], attacks=["inverse-network"])
    rows = run_sweep(spec, "sweeps/s")          # one row per run x attack (results.csv)
    write_report(["sweeps/s"], "reports/s")     # report.md, report.html, figures/
"""

import nopeek.eval.streams  # noqa: F401 (registers eval's random streams first)
from nopeek.eval.frontier import frontier_order, pareto_mask
from nopeek.eval.report import write_report
from nopeek.eval.results import read_results
from nopeek.eval.score import (
    LABEL_AUC_THRESHOLD,
    LEAK_THRESHOLD,
    SSIM_THRESHOLD,
    reconstruction_leakage,
    symmetric_auc,
    tradeoff_score,
)
from nopeek.eval.settings import Setting, make_settings, parse_attack, parse_defense_option
from nopeek.eval.summary import SettingSummary, Stat, label_leak, recommend, summarize
from nopeek.eval.sweep import SweepSpec, load_spec, run_sweep, run_sweeps
from nopeek.eval.tune import KNOBS, Budget, Knob, TuneResult, tune

__all__ = [
    "KNOBS",
    "LABEL_AUC_THRESHOLD",
    "LEAK_THRESHOLD",
    "SSIM_THRESHOLD",
    "Budget",
    "Knob",
    "Setting",
    "SettingSummary",
    "Stat",
    "SweepSpec",
    "TuneResult",
    "frontier_order",
    "label_leak",
    "load_spec",
    "make_settings",
    "pareto_mask",
    "parse_attack",
    "parse_defense_option",
    "read_results",
    "recommend",
    "reconstruction_leakage",
    "run_sweep",
    "run_sweeps",
    "summarize",
    "symmetric_auc",
    "tradeoff_score",
    "tune",
    "write_report",
]
