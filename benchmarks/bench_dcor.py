"""Benchmark nopeek.distance.distance_correlation against dcor, and the cost of a NoPeek step.

Run ``python benchmarks/bench_dcor.py`` (with the repo on PYTHONPATH). It prints numbers and a
summary table; it asserts nothing about time, since timings depend on the machine.

(a) speed: torch forward+backward (float32, CPU) vs ``dcor.distance_correlation`` (numpy,
    default method), n=256, x 784-dim, z 512-dim. Goal: >= 100x. Also against the previous kernel
    (before the NaN/inf and scale checks, copied below as ``_previous_distance_correlation``),
    timed interleaved in the same process. Goal (issue 21): within 1.1x.
(b) memory: peak extra memory of forward+backward at n=1024, x 3072-dim, z 512-dim, measured in a
    fresh subprocess (CUDA allocator peak when a GPU is present, else the VmHWM RSS high-water
    mark, reset just before), vs the n*n*d float64 buffer that a naive broadcast
    ``x[:, None] - x[None]`` implementation needs.
(c) training overhead: one NoPeek step (CE + alpha * dCor on the cut activation) over one plain
    step (CE only), batch 128, small CNN on 3x32x32 cut after its second conv block. Goal: <= 1.25x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from nopeek.distance import distance_correlation
from nopeek.regularizers import NoPeekLoss

THREADS = 2  # the target machine has 2 cores; --threads overrides (1 is steadier on a busy box)
GIB = 1024**3


def _timings(fn: Callable[[], object], *, warmup: int, reps: int) -> list[float]:
    """Wall times (s) of ``reps`` calls of ``fn()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _print_times(label: str, times: list[float]) -> None:
    """One table line: label, median and min in ms."""
    print(f"    {label:<34}: {statistics.median(times) * 1e3:8.2f}ms {min(times) * 1e3:8.2f}ms")


def _print_ratio(label: str, num: list[float], den: list[float]) -> None:
    """One table line: label, ratio of medians and ratio of mins."""
    med = statistics.median(num) / statistics.median(den)
    print(f"    {label:<34}: {med:9.2f}x {min(num) / min(den):8.2f}x")


# ---------------------------------------------------------------------------- (a) speed


def _previous_distance_correlation(x: Tensor, z: Tensor) -> Tensor:
    """REFERENCE ONLY: the dCor kernel before the NaN/inf and scale checks (nopeek/distance.py at
    commit b8614e1), for (N, D) float inputs, kept to time the current one against (issue 21)."""

    def centered(t: Tensor) -> Tensor:
        t = t - t[:1]
        sq = (t * t).sum(dim=1)
        d2 = torch.addmm(sq.unsqueeze(1) + sq.unsqueeze(0), t, t.mT, alpha=-2.0)
        d2 = d2.masked_fill(torch.eye(t.shape[0], dtype=torch.bool), 0.0)
        eps = (d2.detach().max() * torch.finfo(d2.dtype).eps).clamp(min=torch.finfo(d2.dtype).tiny)
        d = torch.where(d2 > eps, d2.clamp(min=eps).sqrt(), 0.0)
        return d - d.mean(dim=0, keepdim=True) - d.mean(dim=1, keepdim=True) + d.mean()

    a, b = centered(x), centered(z)
    n2 = x.shape[0] ** 2
    cov, var_a, var_b = (a * b).sum() / n2, (a * a).sum() / n2, (b * b).sum() / n2
    denom_sqr = (var_a * var_b).abs()
    nonzero = denom_sqr > 0
    dcor_sqr = torch.where(nonzero, cov / torch.where(nonzero, denom_sqr, 1.0).sqrt(), 0.0)
    eps = torch.finfo(x.dtype).eps
    return torch.where(dcor_sqr > eps, dcor_sqr.clamp(min=eps).sqrt(), 0.0)


def bench_speed(n: int = 256, dx: int = 784, dz: int = 512) -> dict[str, float]:
    """Seconds per call (median and min): ours and the previous kernel fwd+bwd float32
    (interleaved), and dcor float64 numpy."""
    import dcor  # slow import (numba), so only here

    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, dx, generator=g)
    z = torch.randn(n, dz, generator=g).requires_grad_(True)
    x_np, z_np = x.double().numpy(), z.detach().double().numpy()

    def ours() -> None:
        z.grad = None
        distance_correlation(x, z).backward()

    def previous() -> None:
        z.grad = None
        _previous_distance_correlation(x, z).backward()

    _timings(ours, warmup=10, reps=0), _timings(previous, warmup=10, reps=0)
    t_ours, t_prev = [], []
    for _ in range(60):  # interleaved, so load from other processes hits both alike
        t_ours += _timings(ours, warmup=0, reps=1)
        t_prev += _timings(previous, warmup=0, reps=1)
    same = abs(distance_correlation(x, z).item() - _previous_distance_correlation(x, z).item())
    t_dcor = _timings(lambda: dcor.distance_correlation(x_np, z_np), warmup=2, reps=9)
    error = abs(
        distance_correlation(x.double(), z.double()).item() - dcor.distance_correlation(x_np, z_np)
    )
    med_ours, med_dcor = statistics.median(t_ours), statistics.median(t_dcor)
    print(f"(a) n={n}, x {dx}-dim, z {dz}-dim (gradient w.r.t. z, as in NoPeek)")
    print(f"    {'':34}  {'median':>10} {'min':>10}")
    _print_times("ours fwd+bwd, float32 torch", t_ours)
    _print_times("previous kernel fwd+bwd (b8614e1)", t_prev)
    _print_times("dcor forward, float64 numpy", t_dcor)
    _print_ratio("ratio ours / previous kernel", t_ours, t_prev)
    _print_ratio("ratio dcor / ours", t_dcor, t_ours)
    print(f"    |ours(float64) - dcor| = {error:.1e}, |ours - previous| = {same:.1e}")
    return {
        "ours": med_ours,
        "dcor": med_dcor,
        "ratio": med_dcor / med_ours,
        "ratio_min": min(t_dcor) / min(t_ours),
        "vs_previous": med_ours / statistics.median(t_prev),
        "vs_previous_min": min(t_ours) / min(t_prev),
    }


# ---------------------------------------------------------------------------- (b) memory

_MEMORY_CHILD = r"""
import sys, torch
from nopeek.distance import distance_correlation


def status(key):  # bytes of a /proc/self/status entry (VmRSS: now, VmHWM: high-water mark)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024


n, dx, dz, threads = (int(a) for a in sys.argv[1:5])
torch.set_num_threads(threads)
device = "cuda" if torch.cuda.is_available() else "cpu"
distance_correlation(torch.rand(8, 3, device=device), torch.rand(8, 2, device=device)).item()
x = torch.rand(n, dx, device=device)
z = torch.randn(n, dz, device=device, requires_grad=True)
if device == "cuda":
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
else:
    try:
        open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    base = status("VmHWM")
distance_correlation(x, z).backward()
if device == "cuda":
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
else:
    peak = status("VmHWM")
print(device, max(peak - base, 0))
"""


def bench_memory(
    n: int = 1024, dx: int = 3072, dz: int = 512, *, threads: int = THREADS
) -> dict[str, float]:
    """Peak extra bytes of forward+backward (measured in a subprocess) vs naive n*n*d buffers."""
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(n), str(dx), str(dz), str(threads)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    device, measured = out[-2], float(out[-1])
    nn_buffer = n * n * 4  # one (N, N) float32 matrix
    naive = n * n * (dx + dz) * 8
    how = "CUDA allocator peak" if device == "cuda" else "VmHWM delta"
    print(f"(b) n={n}, x {dx}-dim, z {dz}-dim, fwd+bwd float32 on {device}")
    print(f"    ours, measured ({how}) : {measured / 2**20:9.1f} MiB")
    print(
        f"      = {measured / nn_buffer:.1f} (N, N) float32 buffers of {nn_buffer / 2**20:.0f} MiB"
    )
    print(f"      (inputs themselves: {n * (dx + dz) * 4 / 2**20:.0f} MiB, not counted)")
    print(
        f"    naive broadcast x[:, None] - x[None], float64, n*n*(dx+dz)*8 : {naive / GIB:.1f} GiB"
    )
    print("    (dcor itself uses scipy cdist: O(n^2) memory, but numpy only and no autograd)")
    return {"ours": measured, "naive": naive, "ratio": naive / max(measured, 1.0)}


# ---------------------------------------------------------------------------- (c) NoPeek step


def _client() -> nn.Sequential:
    """Two conv blocks: (N, 3, 32, 32) -> cut activation (N, 64, 8, 8)."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


def _server() -> nn.Sequential:
    """Head: (N, 64, 8, 8) -> logits (N, 10)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10))


def bench_step(batch: int = 128, alpha: float = 0.5) -> dict[str, float]:
    """Seconds per SGD step with CE only and with CE + alpha * dCor(x, cut activation)."""
    torch.manual_seed(0)
    client, server = _client(), _server()
    params = list(client.parameters()) + list(server.parameters())
    opt = torch.optim.SGD(params, lr=0.01)
    x = torch.rand(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    plain_loss, nopeek_loss = nn.CrossEntropyLoss(), NoPeekLoss(alpha=alpha)

    def step(use_nopeek: bool) -> Tensor:
        opt.zero_grad()
        cut = client(x)
        logits = server(cut)
        if use_nopeek:
            loss = nopeek_loss(logits, y, inputs=x, activations=cut)
        else:
            loss = plain_loss(logits, y)
        loss.backward()
        opt.step()
        return loss

    for _ in range(3):  # warm-up
        step(False), step(True)
    plain, nopeek = [], []
    for _ in range(20):  # interleaved, so load from other processes hits both alike
        plain += _timings(lambda: step(False), warmup=0, reps=1)
        nopeek += _timings(lambda: step(True), warmup=0, reps=1)
    t_plain, t_nopeek = statistics.median(plain), statistics.median(nopeek)
    print(f"(c) batch {batch}, 3x32x32, cut after conv block 2 (64x8x8 = 4096-dim), alpha={alpha}")
    print(f"    {'':34}  {'median':>10} {'min':>10}")
    _print_times("plain step  (CE)", plain)
    _print_times("NoPeek step (CE + alpha * dCor)", nopeek)
    _print_ratio("ratio NoPeek / plain", nopeek, plain)
    return {
        "plain": t_plain,
        "nopeek": t_nopeek,
        "ratio": t_nopeek / t_plain,
        "ratio_min": min(nopeek) / min(plain),
    }


# ---------------------------------------------------------------------------- summary


def _load() -> str:
    """The 1-minute load average, for judging how noisy the timings are."""
    return f"{os.getloadavg()[0]:.2f}"


def main() -> None:
    """Run (a), (b), (c) and print a summary table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=THREADS, help="torch intra-op threads")
    threads = parser.parse_args().threads
    torch.set_num_threads(threads)
    print(
        f"torch {torch.__version__}, {threads} threads of {os.cpu_count()} cores, "
        f"CUDA: {torch.cuda.is_available()}, load average at start: {_load()}"
    )
    print("timings: median (min); a load average above ~0.5 means shared cores, noisy timings\n")
    speed = bench_speed()
    print()
    memory = bench_memory(threads=threads)
    print()
    step = bench_step()
    rows = [
        (
            "(a) speed, dcor / ours",
            f"{speed['ratio']:.1f}x ({speed['ratio_min']:.1f}x)",
            ">= 100x",
            speed["ratio"] >= 100,
        ),
        (
            "(a) speed, ours / previous",
            f"{speed['vs_previous']:.2f}x ({speed['vs_previous_min']:.2f}x)",
            "<= 1.1x",
            speed["vs_previous"] <= 1.1,
        ),
        (
            "(b) peak memory, n=1024",
            f"{memory['ours'] / 2**20:.0f} MiB vs {memory['naive'] / GIB:.0f} GiB naive",
            "O(N^2)",
            memory["ours"] < GIB,
        ),
        (
            "(c) NoPeek step / plain step",
            f"{step['ratio']:.2f}x ({step['ratio_min']:.2f}x)",
            "<= 1.25x",
            step["ratio"] <= 1.25,
        ),
    ]
    print(f"\nsummary (load average at end: {_load()})")
    print(f"{'benchmark':<30} {'result':<26} {'goal':<10} met")
    print("-" * 72)
    for name, result, goal, met in rows:
        print(f"{name:<30} {result:<26} {goal:<10} {'yes' if met else 'NO'}")


if __name__ == "__main__":
    main()
