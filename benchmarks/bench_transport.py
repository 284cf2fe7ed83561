"""Benchmark the transports on loopback: a step over gRPC + mutual TLS, over torch.distributed
(gloo) and in one process.

Run ``python benchmarks/bench_transport.py`` (or ``make bench``). It prints the median step time
of each and their ratios, round by round (the three measured side by side, since the load of a
shared machine comes and goes), with the machine's load average before and after each round;
it asserts nothing about time, since timings depend on the machine and on what else runs on it.

A vanilla digits run (digits-cnn at its default cut, batch 64, one thread a process): the
in-process step (every party in this process, the in-process channel), then the same steps with
each party its own spawned process on 127.0.0.1, built as ``nopeek party`` builds them, over
:class:`~nopeek.runtime.distributed.TorchDistributedChannel` (gloo) and over
:class:`~nopeek.runtime.grpc_channel.GrpcChannel` (gRPC, mutual TLS with certificates from
``nopeek certs``, every message a validated header and raw tensor bytes). Each step is timed
alone after warm-up steps, at the label party (the server: a step ends there with the last
gradient sent), and the medians compared. Goal: gRPC + TLS <= 1.5x the in-process step.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch

from nopeek import TrainConfig
from nopeek.runtime import InProcessRuntime
from nopeek.runtime.channel import WireLog
from nopeek.training.trainer import build_run

BATCH = 64
PARTIES = ("client", "server")


def _setup():
    """The seeded vanilla digits topology, its config and its batches of 64."""
    torch.set_num_threads(1)
    cfg = TrainConfig(dataset="digits", device="cpu").resolved()
    ds = cfg.load_data()
    _, topo = build_run(cfg, ds)
    batches = [
        {k: getattr(ds.train, k)[i * BATCH : (i + 1) * BATCH] for k in ("x", "y", "ids")}
        for i in range(len(ds.train) // BATCH)
    ]
    return topo, cfg, ds, batches


def _steps(runtime: InProcessRuntime, batches: list[dict], count: int) -> list[float]:
    """``count`` training steps as the trainer takes them (zero, step, optimizer step), cycling
    the batches; the seconds of each."""
    times = []
    for i in range(count):
        began = time.perf_counter()
        for party in runtime.parties.values():
            party.zero_grad()
        runtime.step(batches[i % len(batches)], train=True)
        for party in runtime.parties.values():
            party.step_optimizer()
        times.append(time.perf_counter() - began)
    return times


def _launch(transport: str, rank: int, ports: list[int], certs: Path):
    """This process's launch, as ``nopeek party`` makes it for ``transport``."""
    if transport == "grpc":
        from nopeek.runtime.grpc_channel import Identity
        from nopeek.runtime.grpc_launch import GrpcLaunch

        role = PARTIES[rank]
        identity = Identity.read(certs / "ca.pem", certs / f"{role}.pem", certs / f"{role}.key")
        addresses = {p: f"127.0.0.1:{port}" for p, port in zip(PARTIES, ports, strict=True)}
        return GrpcLaunch(addresses, identity, timeout=120)
    from nopeek.runtime.launch import PartyLaunch

    return PartyLaunch(rank, len(PARTIES), "127.0.0.1", ports[0], timeout=120)


def _party(transport: str, rank: int, ports: list[int], certs: Path, warm: int, steps: int, out):
    """One party in its own process; reports (party, median seconds a step)."""
    topo, cfg, ds, batches = _setup()
    launch = _launch(transport, rank, ports, certs)
    me = launch.party(topo)
    cpu = torch.device("cpu")
    make = launch.channel(topo, me, x=ds.train.x, max_batch=BATCH, device=cpu)
    launch.join(me, cpu, [p for p in PARTIES if p != me])
    channel = None
    try:
        channel = make(WireLog())
        runtime = InProcessRuntime(topo, channel, lr=cfg.lr, local=[me])
        _steps(runtime, batches, warm)
        out.put((me, statistics.median(_steps(runtime, batches, steps))))
    finally:
        launch.close(channel)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def distributed(transport: str, certs: Path, warm: int, steps: int) -> float:
    """Median seconds a step at the server, each party its own process over ``transport``."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    ports = [_free_port() for _ in PARTIES]
    procs = [
        ctx.Process(target=_party, args=(transport, r, ports, certs, warm, steps, out))
        for r in range(len(PARTIES))
    ]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=600) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        if p.exitcode != 0:
            raise SystemExit(f"a party of the {transport} run failed (exit {p.exitcode})")
    return results["server"]


def in_process(warm: int, steps: int, reps: int) -> float:
    """Median seconds a step, every party in this process."""
    topo, cfg, _, batches = _setup()
    runtime = InProcessRuntime(topo, lr=cfg.lr)
    _steps(runtime, batches, warm)
    return statistics.median(t for _ in range(reps) for t in _steps(runtime, batches, steps))


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="timed steps (default 100)")
    parser.add_argument("--warm", type=int, default=30, help="warm-up steps (default 30)")
    parser.add_argument("--reps", type=int, default=3, help="in-process repeats (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all three (default 3)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the spawned parties: one thread each
    torch.set_num_threads(1)
    from nopeek.runtime.certs import make_certs

    print(f"transports on loopback (vanilla digits, batch {BATCH}, one thread a party, "
          f"{os.cpu_count()} cores); median step in ms, per round")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp)
        make_certs(certs, list(PARTIES))
        for i in range(args.rounds):  # the three side by side in time: load comes and goes
            before = _load()
            local = in_process(args.warm, args.steps, args.reps)
            gloo = distributed("torch", certs, args.warm, args.steps)
            grpc = distributed("grpc", certs, args.warm, args.steps)
            rows.append((local, gloo, grpc))
            print(
                f"  round {i + 1}: in-process {local * 1e3:6.2f}  gloo {gloo * 1e3:6.2f}  "
                f"gRPC+TLS {grpc * 1e3:6.2f}  | gRPC+TLS/in-process {grpc / local:5.2f}x  "
                f"gloo/in-process {gloo / local:5.2f}x  gRPC+TLS/gloo {grpc / gloo:5.2f}x  "
                f"| load average {before} -> {_load()}"
            )
    ratio = [statistics.median(r[j] / r[0] for r in rows) for j in (2, 1)]
    over_gloo = statistics.median(r[2] / r[1] for r in rows)
    print(f"  median over rounds: gRPC+TLS / in-process {ratio[0]:.2f}x (goal <= 1.5x), "
          f"gloo / in-process {ratio[1]:.2f}x, gRPC+TLS / gloo {over_gloo:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
