"""Benchmark the distributed runtime on loopback: step time over in-process, wire over payload.

Run ``python benchmarks/bench_distributed.py`` (or ``make bench``). It prints numbers and
ratios; it asserts nothing about time, since timings depend on the machine.

(a) step time at batch 64 (digits, digits-cnn, its default cut, one thread a process): every
    party its own spawned process meeting on 127.0.0.1 over gloo
    (:class:`~nopeek.runtime.distributed.TorchDistributedChannel` under
    ``InProcessRuntime(local=[me])``, built as ``nopeek party`` builds them), over the same
    steps with every party in this process (the in-process channel), for vanilla (2 parties)
    and vertical with 2 clients (3 parties). Goal: <= 1.5x.
(b) wire bytes over payload bytes of those steps: everything the channel sent, its 128-byte
    headers included, over the tensor and sample-id bytes. Goal: <= 1.01.

Each step is timed alone and the medians compared (a busy machine's stalls hit single steps);
the distributed step at the label party (the server; a step ends there with the last gradient
sent), after warm-up steps. The floor: the median round trip of one activation-sized message
(header, tensor, ids; there and back) over raw ``torch.distributed`` between the same two
processes, measured warm after the steps. A vanilla step cannot beat the in-process step plus
that round trip. On a loaded machine both sides of a step sleep in every blocking wait (a
sender posts a message's header, tensor and ids together and waits once; the receiver reads the
header alone, checks it, then the rest) and pay the scheduler's wake-up latency each time, which
an isolated ping-pong does not show. Vertical runs three processes on however many cores there
are: on 2 cores they take turns.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist

from nopeek import TrainConfig
from nopeek.runtime import InProcessRuntime
from nopeek.runtime.channel import WireLog
from nopeek.runtime.launch import PartyLaunch, cut_shapes
from nopeek.training.trainer import build_run

BATCH = 64
TOPOLOGIES = {"vanilla": {}, "vertical": {"topology": "vertical", "clients": 2}}


def _setup(topology: str):
    """The seeded model's topology and the batches: (topology, config, batches)."""
    torch.set_num_threads(1)
    cfg = TrainConfig(dataset="digits", device="cpu", **TOPOLOGIES[topology]).resolved()
    ds = cfg.load_data()
    _, topo = build_run(cfg, ds)
    n = len(ds.train) // BATCH
    batches = [
        {k: getattr(ds.train, k)[i * BATCH : (i + 1) * BATCH] for k in ("x", "y", "ids")}
        for i in range(n)
    ]
    return topo, cfg, ds, batches


def _steps(runtime: InProcessRuntime, batches: list[dict], count: int) -> list[float]:
    """``count`` training steps (the trainer's: zero, step, optimizer step), cycling batches;
    the seconds of each."""
    times = []
    for i in range(count):
        began = time.perf_counter()
        batch = batches[i % len(batches)]
        for party in runtime.parties.values():
            party.zero_grad()
        runtime.step(batch, train=True)
        for party in runtime.parties.values():
            party.step_optimizer()
        times.append(time.perf_counter() - began)
    return times


def _round_trips(rank: int, peer: int, numel: int, count: int) -> list[float]:
    """Seconds of each round trip of an activation-sized message (a 16-value int64 header,
    ``numel`` float32 values, 64 int64 ids) between ``rank`` and ``peer`` and back, over raw
    ``torch.distributed``: the floor of one vanilla step's messaging on this machine."""
    parts = [torch.zeros(16, dtype=torch.int64), torch.zeros(numel), torch.zeros(BATCH).long()]
    times = []
    for _ in range(count):
        began = time.perf_counter()
        for send in (rank == 0, rank != 0):
            for t in parts:
                (dist.isend(t, peer) if send else dist.irecv(t, peer)).wait()
        times.append(time.perf_counter() - began)
    return times


def _party(topology: str, rank: int, world: int, port: int, warm: int, steps: int, out) -> None:
    """One party in its own process; reports (party, median seconds a step, wire bytes,
    payload bytes, messages a step it sent or received, median seconds of a raw round trip
    between rank 0 and the server (the last rank), or None)."""
    topo, cfg, ds, batches = _setup(topology)
    launch = PartyLaunch(rank, world, "127.0.0.1", port, timeout=120)
    me = launch.party(topo)
    cpu = torch.device("cpu")
    make = launch.channel(topo, me, x=ds.train.x, max_batch=BATCH, device=cpu)
    launch.join(me, cpu)
    try:
        channel = make(WireLog())
        runtime = InProcessRuntime(topo, channel, lr=cfg.lr, local=[me])
        _steps(runtime, batches, warm)
        dist.barrier()
        per_step = statistics.median(_steps(runtime, batches, steps))
        dist.barrier()
        trip = None  # measured warm, after the steps
        if rank in (0, world - 1):
            numel = math.prod(cut_shapes(topo, ds.train.x[:2])[topo.nodes[0].name]) * BATCH
            trip = statistics.median(_round_trips(rank, world - 1 - rank, numel, steps))
        dist.barrier()
        wire = channel.header_bytes + channel.payload_bytes
        per_step_messages = len(channel.log.records) / (warm + steps)  # sent and received
        out.put((me, per_step, wire, channel.payload_bytes, per_step_messages, trip))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def distributed(topology: str, warm: int, steps: int) -> tuple[float, float, float, float]:
    """(median seconds a step at the label party, its messages a step, wire bytes / payload
    bytes over all parties, median seconds of a raw round trip)."""
    world = 3 if topology == "vertical" else 2
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [
        ctx.Process(target=_party, args=(topology, r, world, port, warm, steps, out))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        if p.exitcode != 0:
            raise SystemExit(f"a party of the {topology} run failed (exit {p.exitcode})")
    by_party = {me: rest for me, *rest in results}
    wire = sum(r[1] for r in by_party.values())
    payload = sum(r[2] for r in by_party.values())
    seconds, _, _, messages, trip = by_party["server"]  # the label party of both topologies
    return seconds, messages, wire / payload, trip


def in_process(topology: str, warm: int, steps: int, reps: int) -> float:
    """Median seconds a step, every party in this process."""
    topo, cfg, _, batches = _setup(topology)
    runtime = InProcessRuntime(topo, lr=cfg.lr)
    _steps(runtime, batches, warm)
    return statistics.median(t for _ in range(reps) for t in _steps(runtime, batches, steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="timed steps (default 100)")
    parser.add_argument("--warm", type=int, default=50, help="warm-up steps (default 50)")
    parser.add_argument("--reps", type=int, default=3, help="in-process repeats (default 3)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the spawned parties: one thread each
    torch.set_num_threads(1)
    print(f"distributed runtime on loopback (gloo, digits, batch {BATCH}, one thread a party)")
    for topology in TOPOLOGIES:
        local = in_process(topology, args.warm, args.steps, args.reps)
        remote, messages, ratio, trip = distributed(topology, args.warm, args.steps)
        name = f"  {topology:<9}"
        print(f"{name} in-process step (median)      : {local * 1e3:8.3f} ms")
        print(f"{name} distributed step (median)     : {remote * 1e3:8.3f} ms")
        print(f"{name} distributed / in-process      : {remote / local:8.2f}x  (goal <= 1.5x)")
        print(f"{name} raw gloo round trip, 1 message: {trip * 1e3:8.3f} ms (floor, see above)")
        print(f"{name} server messages a step        : {messages:8g}")
        print(f"{name} wire bytes / payload bytes    : {ratio:8.4f}   (goal <= 1.01)")


if __name__ == "__main__":
    main()
