"""Benchmark hundreds of clients: relay, SplitFed v1/v2 and FedAvg at K = 100 and K = 500.

Run ``python benchmarks/bench_scale.py`` (or ``make bench``). For each K, in a fresh process
(so that its peak memory is its own), ``nopeek cost --measure`` on digits-x10 (digits with ten
times the training images: 10770, so that 500 clients hold ~21 each), digits-cnn cut conv2,
batch 64, seed 0: split learning (many-clients relay, peer), SplitFed v1 and v2 and FedAvg, each
until test accuracy >= --target or --max-epochs. It prints the measured table (client bytes and
FLOPs next to the formulas), the wall time and the peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) of each K. It asserts nothing about time.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import torch


def one(clients: int, target: float, max_epochs: int) -> None:
    from nopeek.eval.cost_measure import format_measured, measure

    torch.set_num_threads(1)
    began = time.perf_counter()
    out = measure(
        dataset="digits-x10",
        clients=clients,
        target=target,
        max_epochs=max_epochs,
        splitfed=("v1", "v2"),
    )
    took = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(format_measured(out))
    print(f"K={clients}: wall {took:.1f} s, peak memory (ru_maxrss) {peak:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="100,500", help="client counts (default 100,500)")
    parser.add_argument("--target", type=float, default=0.8, help="test accuracy (0.8)")
    parser.add_argument("--max-epochs", type=int, default=8, help="at most (8)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        one(args.one, args.target, args.max_epochs)
        return
    for k in (int(c) for c in args.clients.split(",")):
        cmd = [sys.executable, __file__, "--one", str(k), "--target", str(args.target)]
        subprocess.run([*cmd, "--max-epochs", str(args.max_epochs)], check=True)


if __name__ == "__main__":
    main()
