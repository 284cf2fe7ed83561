"""``nopeek report``: the leakage report of finished sweeps, or of the default digits sweep."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from nopeek.cli.commands import summary
from nopeek.workers import warm


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help=summary("report"),
        description="Write OUT/report.md, OUT/report.html, OUT/report.json and OUT/figures/ for "
        "the given sweeps (one section each). Without --sweep, first run the default sweeps on "
        "the bundled digits data into OUT/sweeps/ (finished runs are reused). OUT must be new, "
        "empty or a report folder nopeek wrote; its report files are replaced only once the new "
        "ones are complete.",
    )
    p.add_argument(
        "--sweep",
        action="append",
        dest="sweeps",
        default=None,
        help="a finished sweep directory, repeatable (default: run the default digits sweeps)",
    )
    p.add_argument("--out", default="reports/latest", help="report folder (default reports/latest)")
    p.add_argument(
        "--jobs", type=int, default=1, help="default sweeps: runs in parallel processes (default 1)"
    )
    p.add_argument(
        "--attack-budget",
        type=int,
        default=2,
        help="before the card calls a setting safe, re-attack it with each attack's strength "
        "search, this many configurations at the first rung (as `nopeek attack --strongest`); "
        "0: the sweep's fixed-strength figures only (default 2)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.jobs > 1 and not args.sweeps:
        warm()  # the workers' imports overlap this process's own
    from nopeek.eval.defaults import default_sweeps
    from nopeek.eval.report import write_report
    from nopeek.eval.sweep import run_sweeps
    from nopeek.rundir import RunDir

    began = time.perf_counter()
    sweeps = args.sweeps
    if not sweeps:
        folder = RunDir(args.out, "report")
        folder.plan(reuse=True)  # a file, a link, a foreign folder: refused before any training
        todo = [(spec, Path(args.out) / "sweeps" / name) for name, spec in default_sweeps()]
        for spec, path in todo:
            print(f"sweep {path.name}: {len(spec.settings)} settings x {len(spec.seeds)} seeds, "
                  f"attacks {', '.join(spec.attacks)} -> {path}")  # fmt: skip
        with folder.writing(reuse=True, keep=_has_finished_run):
            run_sweeps(todo, jobs=args.jobs, quiet=args.quiet)
        sweeps = [path for _, path in todo]
    path = write_report(sweeps, args.out, attack_budget=args.attack_budget)
    print(f"report -> {path} (and report.html) in {time.perf_counter() - began:.1f} s")
    return 0


def _has_finished_run(out: Path) -> bool:
    """Whether report folder ``out`` holds a trained run of its sweeps (kept after a failure)."""
    return any(out.glob("sweeps/*/runs/*/metrics.json"))
