"""Benchmark ``--strongest``: the family search at the default budget vs one default attack.

Run ``python benchmarks/bench_strongest.py [--attack inverse-network] [--budget N]`` after
installation. It trains one tiny digits run (2 epochs, cut conv2) into a temporary folder, then
for each attack runs ``nopeek attack --attack A`` (the attack at default strength) and ``nopeek
attack --attack A --strongest`` (the search, default ``--attack-budget``) in subprocesses with
one thread, and prints both wall and CPU times, their ratios and the leak each found (the
search's worst case, with the configuration that reached it). Wall times on a shared machine are
slower than on an idle core: compare the CPU ratio. The script asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _nopeek(*argv: str) -> tuple[float, float]:
    """Run ``nopeek *argv`` with one thread; (wall seconds, CPU seconds)."""
    nopeek = Path(sys.executable).with_name("nopeek")
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    began, cpu = time.perf_counter(), _cpu()
    subprocess.run([str(nopeek), *argv], check=True, env=env, capture_output=True, text=True)
    return time.perf_counter() - began, _cpu() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--attack", action="append", help="attacks to compare (default: inverse-network)"
    )
    parser.add_argument("--budget", type=int, help="--attack-budget (default: the CLI's)")
    parser.add_argument("--keep", help="train the run here instead of a temporary folder")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="nopeek-bench-strong-"))
    run = root / "run"
    if run.exists():
        shutil.rmtree(run)
    _nopeek("train", "--dataset", "digits", "--epochs", "2", "--cut", "conv2", "--out", str(run))
    print(f"tiny digits run (2 epochs, cut conv2), load average {os.getloadavg()[0]:.2f}")
    print("| attack | one default attack | --strongest | ratio (wall, CPU) | leak (default) | "
          "leak (worst) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for attack in args.attack or ["inverse-network"]:
        plain_s, plain_cpu = _nopeek("attack", "--run", str(run), "--attack", attack)
        plain = json.loads((run / "attacks" / f"{attack}.json").read_text())
        extra = ["--attack-budget", str(args.budget)] if args.budget else []
        search_s, search_cpu = _nopeek(
            "attack", "--run", str(run), "--attack", attack, "--strongest", *extra
        )
        found = json.loads((run / "attacks" / f"{attack}.strongest.json").read_text())
        worst = found["worst"]
        config = ",".join(f"{k}={v}" for k, v in worst["config"].items() if v is not None)
        print(
            f"| {attack} | {plain_s:.1f} s ({plain_cpu:.1f} s CPU) | {search_s:.1f} s "
            f"({search_cpu:.1f} s CPU, {found['runs']} runs) | {search_s / plain_s:.1f}x, "
            f"{search_cpu / plain_cpu:.1f}x | {plain['leak']:.3f} | "
            f"{worst['leak']:.3f} at {config}, seed {worst['seed']} |"
        )
    if not args.keep:
        shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
