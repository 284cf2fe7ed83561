"""Benchmark hundreds of clients: relay, SplitFed v1/v2 and FedAvg at K = 100 and K = 500.

Run ``python benchmarks/bench_scale.py`` (or ``make bench``). For each K, in a fresh process
(so that its peak memory is its own), ``nopeek cost --measure`` on digits-x10 (digits with ten
times the training images: 10770, so that 500 clients hold ~21 each), digits-cnn cut conv2,
batch 64, seed 0: split learning (many-clients relay, peer), SplitFed v1 and v2 and FedAvg, each
until test accuracy >= --target (0.8) within its epoch (round) budget, with its own knobs
(:data:`KNOBS`: Adam's learning rate, local epochs E per round, the budget; ``--knobs
METHOD:lr=X,E=N,max=M`` overrides one). With ~21 to ~108 samples a client, one local epoch is one
or two steps, so SplitFed v1 and FedAvg make E = 5 passes a round at lr 1e-2; the relay and
SplitFed v2 (one server segment, trained on every batch) reach the target in one or two epochs of
lr 1e-3. Each method trains its whole budget (totals are taken up to the first epoch that reached
the target), so the budgets are tight: the wall time is the benchmark's.

It prints the measured table (client bytes and FLOPs next to the formulas, totals and per
client), each method's wall time, and the wall time and peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) of each K. It asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

import torch

KNOBS = {
    "split": "lr=1e-3,max=2",
    "splitfed-v1": "lr=1e-2,E=5,max=6",
    "splitfed-v2": "lr=1e-3,max=3",
    "fedavg": "lr=1e-2,E=5,max=6",
}
"""Per method: learning rate, local epochs per round, epoch (round) budget."""


def one(clients: int, target: float, knobs: dict[str, str]) -> None:
    from nopeek.eval.cost_measure import Knobs, Measured, format_measured, measure

    torch.set_num_threads(1)
    base = Knobs(1e-3, 1, 8)
    began = time.perf_counter()
    out = measure(
        dataset="digits-x10",
        clients=clients,
        target=target,
        splitfed=("v1", "v2"),
        knobs={m: Knobs.parse(text, base) for m, text in knobs.items()},
    )
    took = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(format_measured(out))
    print(f"per client (K = {clients}): MB measured / formula, MFLOPs measured / formula, wall s")
    for m in (v for v in out.values() if isinstance(v, Measured)):
        print(
            f"  {m.method:30s}{m.bytes_total / clients / 1e6:8.3f} /"
            f"{m.bytes_predicted / clients / 1e6:8.3f}"
            f"{m.flops_clients / clients / 1e6:10.1f} /{m.flops_predicted / clients / 1e6:9.1f}"
            f"{m.seconds:8.1f}"
        )
    print(f"K={clients}: wall {took:.1f} s, peak memory (ru_maxrss) {peak:.0f} MiB")


def _knobs(given: list[str]) -> dict[str, str]:
    knobs = dict(KNOBS)
    for text in given:
        method, _, rest = text.partition(":")
        knobs[method] = ",".join(filter(None, (knobs.get(method, ""), rest)))  # later wins
    return knobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="100,500", help="client counts (default 100,500)")
    parser.add_argument("--target", type=float, default=0.8, help="test accuracy (0.8)")
    parser.add_argument(
        "--knobs",
        action="append",
        default=[],
        metavar="METHOD:lr=X,E=N,max=M",
        help=f"override one method's knobs (repeatable); defaults: {KNOBS}",
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    knobs = _knobs(args.knobs)
    if args.one is not None:
        one(args.one, args.target, knobs)
        return
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"knobs: {knobs}; target {args.target}; load average {load}")
    for k in (int(c) for c in args.clients.split(",")):
        cmd = [sys.executable, __file__, "--one", str(k), "--target", str(args.target)]
        subprocess.run([*cmd, *(f"--knobs={m}:{t}" for m, t in knobs.items())], check=True)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at the end {load}")


if __name__ == "__main__":
    main()
