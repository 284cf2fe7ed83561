"""The privacy-utility-communication frontier of compressors at the cut, on digits.

Run ``python benchmarks/bench_compress.py [--out sweeps/compress] [--epochs 8] [--jobs 2]``
after installation. It runs, as subprocesses with one thread each:

1. ``nopeek sweep`` over ``--compress`` (none, top-k ratios, int8/int4/fp16 bit widths, and
   top-k forward with int4 backward), two reconstruction attacks on every run;
2. for every run, ``nopeek attack --strongest`` over both attacks (each attack's family
   searched, the same steps pinned), whose worst case is the run's strongest leak;

then writes ``OUT/compress.md`` (one row per setting: bytes per epoch each way from the wire log
next to the analytic size of the compressed messages, accuracy, the strongest leak and whether
the compressor also acts as a defense) and ``OUT/compress-frontier.png`` (the report's frontier
figure, :mod:`nopeek.eval.communication`, on the strongest leaks). It prints the commands it
runs and asserts that the measured bytes equal the analytic ones.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

COMPRESS = [
    "none",
    "forward=topk:0.25",
    "forward=topk:0.1",
    "forward=topk:0.02",
    "forward=fp16",
    "forward=int8",
    "forward=int4",
    "forward=topk:0.1,backward=int4",
]
ATTACKS = ["white-box:steps=100", "inverse-network:steps=300"]


def _nopeek(argv: list[str]) -> subprocess.Popen:
    nopeek = Path(sys.executable).with_name("nopeek")
    print("$ nopeek " + " ".join(f"'{a}'" if "," in a or "=" in a else a for a in argv))
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([str(nopeek), *argv], env=env)


def _run_all(commands: list[list[str]], jobs: int) -> None:
    """Run ``commands`` (nopeek argv each), ``jobs`` at a time; any failure stops the script."""
    running: list[subprocess.Popen] = []
    for argv in commands:
        while len(running) >= jobs:
            time.sleep(0.5)
            running = [p for p in running if _alive(p)]
        running.append(_nopeek(argv))
    for p in running:
        _alive(p, wait=True)


def _alive(p: subprocess.Popen, wait: bool = False) -> bool:
    code = p.wait() if wait else p.poll()
    if code not in (None, 0):
        raise SystemExit(f"command failed ({code}): {p.args}")
    return code is None


def analytic_bytes(compress: str, direction: str, tail: tuple[int, ...], n: int, batch: int):
    """Bytes one epoch of ``n`` samples in batches of ``batch`` sends in ``direction`` when each
    message (b, *tail) float32 is compressed as ``compress`` says (summed message by message)."""
    from nopeek.compress import parse_compress

    codec = parse_compress(compress).get(direction)
    sizes = [min(batch, n - i) for i in range(0, n, batch)]
    if codec is None:
        return sum(b * math.prod(tail) * 4 for b in sizes)
    import torch

    return sum(codec.nbytes((b, *tail), torch.float32) for b in sizes)


def _strongest_leak(run: Path) -> float:
    leaks = [json.loads(p.read_text())["leak"] for p in (run / "attacks").glob("*.strongest.json")]
    return max(leaks)


def summarise(out: Path) -> list[dict]:
    """One record per setting (seed 0) of the sweep in ``out``."""
    from nopeek.eval.results import read_results

    records = []
    for row in {r["run"]: r for r in read_results(out)}.values():  # one per run, in sweep order
        run = out / row["run"]
        config = json.loads((run / "config.json").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        records.append({
            "row": row,
            "config": config,
            "metrics": metrics,
            "strongest": _strongest_leak(run),
        })  # fmt: skip
    return records


def table(out: Path, records: list[dict]) -> str:
    """The markdown table of the records, with the analytic bytes next to the measured ones."""
    from nopeek.eval import communication
    from nopeek.eval.results import make_rows
    from nopeek.eval.summary import summarize

    rows = []
    for r in records:  # the sweep's rows with the strongest search's worst case as the leak
        base = {k: r["row"][k] for k in ("setting", "label", "run", "alpha", "seed", "defenses")}
        base["compress"] = r["config"]["compress"]
        rows += make_rows(base, r["metrics"], {"strongest": {"leak": r["strongest"]}})
    summaries = summarize(rows)
    communication.figure(summaries, out / "compress-frontier.png")
    lines = [
        "| # | --compress | bytes/epoch →server (analytic) | bytes/epoch →client (analytic) "
        "| bytes/sample | × fewer | accuracy | strongest leak | frontier | acts as a defense |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    on = communication.frontier(summaries)
    plain = summaries[0].bytes_per_sample.mean
    for i, (r, s) in enumerate(zip(records, summaries)):
        m, c = r["metrics"], r["config"]
        n, tail = m["train_samples"], (32, 4, 4)  # digits-cnn's default cut conv2
        cells = []
        for key, direction in (("bytes_client_to_server", "forward"),
                               ("bytes_server_to_client", "backward")):  # fmt: skip
            want = analytic_bytes(c["compress"] or "", direction, tail, n, c["batch_size"])
            assert m[key] == want, (c["compress"], direction, m[key], want)
            cells.append(f"{m[key]:,.0f} ({want:,.0f})")
        verdict = communication.acts_as_defense(s, summaries)
        word = {True: "yes", False: "no", None: "—"}[verdict]
        lines.append(
            f"| {i + 1} | {c['compress'] or 'none'} | {cells[0]} | {cells[1]} "
            f"| {s.bytes_per_sample.mean:,.0f} | {plain / s.bytes_per_sample.mean:.1f} "
            f"| {s.accuracy.mean:.3f} | {s.leakage.mean:.3f} | {'yes' if on[i] else '—'} "
            f"| {word} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="sweeps/compress")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--budget", type=int, default=2, help="--attack-budget of the searches")
    p.add_argument("--n-samples", type=int, default=32)
    args = p.parse_args()
    out = Path(args.out)
    began = time.perf_counter()
    sweep = ["sweep", "--dataset", "digits", "--epochs", str(args.epochs), "--quiet"]
    sweep += [a for c in COMPRESS for a in ("--compress", c)]
    sweep += [a for x in ATTACKS for a in ("--attack", x)]
    sweep += ["--n-samples", str(args.n_samples), "--jobs", str(args.jobs), "--out", str(out)]
    _run_all([sweep], 1)
    searches = []
    for run in sorted((out / "runs").iterdir()):
        if not all((run / "attacks" / f"{a.split(':')[0]}.strongest.json").is_file()
                   for a in ATTACKS):  # fmt: skip
            argv = ["attack", "--run", str(run), *(a for x in ATTACKS for a in ("--attack", x))]
            argv += ["--strongest", "--attack-budget", str(args.budget)]
            searches.append(argv + ["--n-samples", str(args.n_samples)])
    _run_all(searches, args.jobs)
    text = table(out, summarise(out))
    (out / "compress.md").write_text(text)
    print(text)
    print(f"{time.perf_counter() - began:.0f} s -> {out}/compress.md, {out}/compress-frontier.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
