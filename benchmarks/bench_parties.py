"""Benchmark the party runtime: the cost of the many-clients relay and of per-party messaging.

Run ``python benchmarks/bench_parties.py`` (or ``make bench``). It prints numbers and ratios; it
asserts nothing about time, since timings depend on the machine.

(a) relay epoch: one many-clients epoch (K clients in turns, client segment relayed peer to peer
    after every turn) over one vanilla epoch on the same training data (digits-cnn, cut conv2,
    batch 64): digits at K = 10 and K = 100, digits-x10 (ten times the training images) at
    K = 100 and K = 500. Goal: <= 1.2x. With K shards a relay epoch also runs more, smaller
    batches than vanilla (each shard ends in a partial batch: on digits at K = 100 every shard
    is one batch of ~11 samples), so the table also shows a vanilla epoch over the very same
    batch sizes (the relay's own cost: what the goal can be held to) and the hand-offs alone.
(b) relay memory at K = 100: the most client-segment parameters held at once across all
    clients, sampled after every step and every hand-off (one segment's worth means one segment
    live at a time, not K copies).
(c) step time of the party runtime over the v0.1 single-loop engine for vanilla (reproduced
    below as ``LegacyEngine``: one object running every party's nodes), same batch. Goal <= 1.05x.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from nopeek import InProcessChannel, TrainConfig, load_dataset
from nopeek.runtime import InProcessRuntime
from nopeek.runtime.channel import BACKWARD, FORWARD
from nopeek.runtime.plans import STRATEGIES, batches
from nopeek.topology import DATA_PREFIX, Topology
from nopeek.training.trainer import build_run


def _runtime(
    topology: str, clients: int = 1, dataset: str = "digits"
) -> tuple[InProcessRuntime, object, object]:
    cfg = TrainConfig(dataset=dataset, topology=topology, clients=clients, device="cpu")
    cfg = cfg.resolved()
    ds = load_dataset(dataset, seed=0)
    _, topo = build_run(cfg, ds)
    runtime = InProcessRuntime(topo, InProcessChannel())
    strategy = STRATEGIES.get(topo.strategy)(topo, ds.train, non_iid=None, seed=0)
    return runtime, strategy, ds


_EPOCHS: dict[int, int] = {}  # id(runtime) -> the epoch it last ran


def _epoch(runtime, strategy, *, probe: Callable[[], None] | None = None) -> float:
    """One training epoch; epochs are numbered per runtime as the trainer numbers them (a relay
    epoch after the first starts where the last one ended: with the last client's weights)."""
    epoch = _EPOCHS[id(runtime)] = _EPOCHS.get(id(runtime), -1) + 1
    began = time.perf_counter()
    for step in strategy.epoch(runtime, 64, epoch):
        for p in step.parties:
            runtime.parties[p].zero_grad()
        runtime.step(step.batch, train=True, nodes=step.nodes)
        for p in step.parties:
            runtime.parties[p].step_optimizer()
        if probe is not None:
            probe()
    return time.perf_counter() - began


def _median(fn: Callable[[], float], reps: int) -> float:
    fn()  # warm up
    return statistics.median(fn() for _ in range(reps))


def _vanilla_same_batches(strategy_sizes: list[int], reps: int, dataset: str) -> float:
    """A vanilla epoch over batches of exactly the relay's sizes (same samples, same steps)."""
    runtime, strategy, ds = _runtime("vanilla", dataset=dataset)
    nodes = [n.name for n in runtime.topology.nodes]

    def run() -> float:
        began = time.perf_counter()
        start = 0
        for size in strategy_sizes:
            idx = torch.arange(start, start + size) % len(ds.train)
            batch = {"x": ds.train.x[idx], "y": ds.train.y[idx], "ids": ds.train.ids[idx]}
            for p in runtime.parties.values():
                p.zero_grad()
            runtime.step(batch, train=True, nodes=nodes)
            for p in runtime.parties.values():
                p.step_optimizer()
            start += size
        return time.perf_counter() - began

    return _median(run, reps)


RELAY_CASES = (("digits", 10), ("digits", 100), ("digits-x10", 100), ("digits-x10", 500))


def bench_relay(reps: int) -> None:
    print("(a) many-clients relay epoch vs vanilla epoch (batch 64)")
    vanilla: dict[str, float] = {}
    for dataset, k in RELAY_CASES:
        if dataset not in vanilla:
            van_rt, van_st, _ = _runtime("vanilla", dataset=dataset)
            vanilla[dataset] = _median(lambda rt=van_rt, st=van_st: _epoch(rt, st), reps)
            print(
                f"    {dataset:10s} vanilla epoch                : {vanilla[dataset] * 1e3:8.1f} ms"
            )
        t_vanilla = vanilla[dataset]
        rt, st, _ = _runtime("many-clients", k, dataset)
        t_relay = _median(lambda rt=rt, st=st: _epoch(rt, st), reps)
        sizes = [len(b["y"]) for c, s in st.shards.items() for b in batches(s, 64, seed=0, epoch=0)]
        t_same = _vanilla_same_batches(sizes, reps, dataset)
        t_hand = _median(lambda rt=rt, st=st: _handoffs(rt, st), reps)
        tag = f"{dataset:10s} K={k:<3}"
        print(f"    {tag} relay epoch ({len(sizes):4d} steps)  : {t_relay * 1e3:8.1f} ms")
        print(f"    {tag} relay / vanilla            : {t_relay / t_vanilla:8.2f}x")
        print(f"    {tag} vanilla, same batch sizes  : {t_same * 1e3:8.1f} ms")
        ratio = t_relay / t_same
        print(f"    {tag} relay / vanilla same batches: {ratio:7.2f}x  (goal <= 1.2x)")
        print(f"    {tag} hand-offs alone / vanilla  : {t_hand / t_vanilla:8.2f}x")


def _handoffs(runtime: InProcessRuntime, strategy) -> float:
    """A full ring of weight hand-offs (K relays), timed alone."""
    clients = strategy.clients
    holder = next(c for c in clients if runtime.parties[c].segments[c] is not None)
    order = clients[clients.index(holder) + 1 :] + clients[: clients.index(holder) + 1]
    began = time.perf_counter()
    for nxt in order:
        if nxt != holder:
            runtime.relay(holder, nxt)
            holder = nxt
    return time.perf_counter() - began


def bench_memory() -> None:
    print("(b) relay memory at K = 100: client-segment parameters held at once")
    rt, st, _ = _runtime("many-clients", 100)
    peak = {"segments": 0, "bytes": 0}

    def probe() -> None:
        held = [rt.parties[c].segments[c] for c in st.clients]
        live = [m for m in held if m is not None]
        size = sum(p.numel() * p.element_size() for m in live for p in m.parameters())
        peak["segments"] = max(peak["segments"], len(live))
        peak["bytes"] = max(peak["bytes"], size)

    _epoch(rt, st, probe=probe)
    one = sum(p.numel() * p.element_size() for p in rt.topology.factories["client0"]().parameters())
    print(f"    live client segments (max)        : {peak['segments']:8d}  (K copies: 100)")
    share = peak["bytes"] / one
    print(f"    client parameter bytes (max)      : {peak['bytes']:8d}  ({share:.2f} segments)")


class LegacyEngine:
    """The v0.1 engine, for comparison: one object runs every party's nodes out of shared
    dictionaries (two-party chains only); every cut still goes through the channel."""

    def __init__(self, topology: Topology, channel: InProcessChannel) -> None:
        self.topology, self.channel = topology, channel
        self.criterion = nn.CrossEntropyLoss()

    def step(self, batch: dict[str, Tensor]) -> float:
        topo, outputs, leaves, sent = self.topology, {}, {}, {}
        for node in topo.nodes:
            args = []
            for src in node.inputs:
                if src.startswith(DATA_PREFIX):
                    args.append(batch[src[len(DATA_PREFIX) :]])
                    continue
                z = outputs[src]
                msg = self.channel.send(z.detach(), cut=topo.cut_of(src), direction=FORWARD)
                leaf = msg.requires_grad_(True)
                sent[src], leaves[src] = z, leaf
                args.append(leaf)
            outputs[node.name] = node.module(*args)
        obj = topo.objectives[0]
        loss = self.criterion(outputs[obj.node], batch["y"])
        roots = {obj.node: [(loss, None)]}
        for node in reversed(topo.nodes):
            todo = roots.get(node.name, [])
            torch.autograd.backward([t for t, _ in todo], [g for _, g in todo])
            for src in node.inputs:
                if src.startswith(DATA_PREFIX):
                    continue
                grad = self.channel.send(
                    leaves[src].grad.detach(), cut=topo.cut_of(src), direction=BACKWARD
                )
                roots[src] = [(sent[src], grad)]
        return float(loss.detach())


def bench_step(reps: int) -> None:
    print("(c) vanilla step: party runtime vs the v0.1 single-loop engine (batch 64)")
    rt, _, ds = _runtime("vanilla")
    legacy = LegacyEngine(rt.topology, InProcessChannel())
    batch = {"x": ds.train.x[:64], "y": ds.train.y[:64], "ids": ds.train.ids[:64]}

    def once(fn) -> float:
        began = time.perf_counter()
        fn()
        return time.perf_counter() - began

    run_new, run_old = (lambda: rt.step(batch, train=True)), (lambda: legacy.step(batch))
    for _ in range(20):
        run_new(), run_old()
    new, old = [], []
    for _ in range(reps * 100):  # interleaved, so load on the machine hits both alike
        new.append(once(run_new))
        old.append(once(run_old))
    med = statistics.median(new) / statistics.median(old)
    print(f"    party runtime step                : {statistics.median(new) * 1e3:8.3f} ms")
    print(f"    v0.1 engine step                  : {statistics.median(old) * 1e3:8.3f} ms")
    low = min(new) / min(old)
    print(f"    runtime / v0.1 (median, min)      : {med:8.3f}x {low:8.3f}x  (goal <= 1.05x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per timing (default 3)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bench_relay(args.reps)
    bench_memory()
    bench_step(args.reps)


if __name__ == "__main__":
    main()
