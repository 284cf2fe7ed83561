"""Benchmark the command line's start-up against ``python -c "import torch"``.

Run ``python benchmarks/bench_startup.py`` after installation. Each command runs ``--repeat``
times in a fresh subprocess from a temporary folder (interleaved, so machine load hits them
alike); the script prints the median wall time of each and its ratio to importing torch, with
the goal from issue 17, and the load average (a loaded machine slows every line alike, so compare
ratios, not seconds). It asserts nothing about time.

- ``nopeek --help``: imports no torch; goal <= 0.3x importing torch.
- ``nopeek train --epochs 0``: a no-op path (the config is refused before any data set, model or
  runtime is imported); goal <= 1.3x importing torch.
- ``nopeek models``: lists the built-in models; reported for reference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
COMMANDS = {
    "import torch": ([sys.executable, "-c", "import torch"], None),
    "nopeek --help": ([str(BIN / "nopeek"), "--help"], 0.3),
    "nopeek train --epochs 0": ([str(BIN / "nopeek"), "train", "--epochs", "0"], 1.3),
    "nopeek models": ([str(BIN / "nopeek"), "models"], None),
}


def _time(cmd: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def measure(repeat: int) -> dict[str, float]:
    """Median seconds of each command over ``repeat`` interleaved runs."""
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(repeat):
            for name, (cmd, _goal) in COMMANDS.items():
                times[name].append(_time(cmd, cwd))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    med = measure(args.repeat)
    base = med["import torch"]
    print(
        f"start-up, median of {args.repeat} runs, load average {load:.2f} on {os.cpu_count()} cpus"
    )
    for name, (_cmd, goal) in COMMANDS.items():
        ratio = med[name] / base
        verdict = (
            "" if goal is None else f"  goal <= {goal}x: {'met' if ratio <= goal else 'MISSED'}"
        )
        print(f"  {name:<26} {med[name]:6.3f} s  {ratio:5.2f}x import torch{verdict}")


if __name__ == "__main__":
    main()
