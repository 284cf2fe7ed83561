"""Benchmark nopeek.distance.distance_correlation against dcor, and the cost of a NoPeek step.

Run ``python benchmarks/bench_dcor.py`` (with the repo on PYTHONPATH). It prints numbers and a
summary table; it asserts nothing about time, since timings depend on the machine.

(a) speed: torch forward+backward (float32, CPU) vs ``dcor.distance_correlation`` (numpy,
    default method), n=256, x 784-dim, z 512-dim. Goal: >= 100x.
(b) memory: peak extra memory of forward+backward at n=1024, x 3072-dim, z 512-dim, measured in a
    fresh subprocess (CUDA allocator peak when a GPU is present, else the RSS high-water mark),
    vs the n*n*d float64 buffer a naive broadcast ``x[:, None] - x[None]`` implementation needs.
(c) training overhead: one NoPeek step (CE + alpha * dCor on the cut activation) over one plain
    step (CE only), batch 128, small CNN on 3x32x32 cut after its second conv block. Goal: <= 1.25x.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from nopeek.distance import distance_correlation
from nopeek.regularizers import NoPeekLoss

THREADS = 2
GIB = 1024**3


def _median_seconds(fn: Callable[[], object], *, warmup: int, reps: int) -> float:
    """Median wall time of ``fn()`` over ``reps`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------------------- (a) speed


def bench_speed(n: int = 256, dx: int = 784, dz: int = 512) -> dict[str, float]:
    """Seconds per call: ours (forward+backward w.r.t. z, float32) and dcor (float64 numpy)."""
    import dcor  # slow import (numba), so only here

    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, dx, generator=g)
    z = torch.randn(n, dz, generator=g).requires_grad_(True)
    x_np, z_np = x.double().numpy(), z.detach().double().numpy()

    def ours() -> None:
        z.grad = None
        distance_correlation(x, z).backward()

    t_ours = _median_seconds(ours, warmup=5, reps=30)
    t_dcor = _median_seconds(lambda: dcor.distance_correlation(x_np, z_np), warmup=2, reps=7)
    value_ours = distance_correlation(x.double(), z.detach().double()).item()
    print(f"(a) n={n}, x {dx}-dim, z {dz}-dim")
    print(f"    ours  fwd+bwd float32 torch : {t_ours * 1e3:9.2f} ms")
    print(f"    dcor  forward float64 numpy : {t_dcor * 1e3:9.2f} ms")
    print(
        f"    |ours(float64) - dcor| = {abs(value_ours - dcor.distance_correlation(x_np, z_np)):.1e}"
    )
    return {"ours": t_ours, "dcor": t_dcor, "ratio": t_dcor / t_ours}


# ---------------------------------------------------------------------------- (b) memory

_MEMORY_CHILD = r"""
import resource, sys, torch
from nopeek.distance import distance_correlation
torch.set_num_threads(int(sys.argv[4]))
n, dx, dz = (int(a) for a in sys.argv[1:4])
device = "cuda" if torch.cuda.is_available() else "cpu"
distance_correlation(torch.rand(8, 3, device=device), torch.rand(8, 2, device=device)).item()
x = torch.rand(n, dx, device=device)
z = torch.randn(n, dz, device=device, requires_grad=True)
if device == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
else:
    base = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    base = max(base, before)
distance_correlation(x, z).backward()
if device == "cuda":
    torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated()
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(device, max(peak - base, 0))
"""


def bench_memory(n: int = 1024, dx: int = 3072, dz: int = 512) -> dict[str, float]:
    """Peak extra bytes of forward+backward (measured in a subprocess) vs naive n*n*d buffers."""
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(n), str(dx), str(dz), str(THREADS)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    device, measured = out[-2], float(out[-1])
    analytic = 12 * n * n * 4  # about a dozen live (N, N) float32 buffers incl. autograd
    inputs = n * (dx + dz) * 4
    naive = n * n * (dx + dz) * 8
    how = "CUDA peak" if device == "cuda" else "RSS high-water delta"
    print(f"(b) n={n}, x {dx}-dim, z {dz}-dim, fwd+bwd float32 on {device}")
    print(f"    ours, measured ({how})   : {measured / 2**20:9.1f} MiB")
    print(f"    ours, analytic ~12 (N,N) + copy : {(analytic + inputs) / 2**20:9.1f} MiB")
    print(f"    naive n*n*(dx+dz)*8 broadcast   : {naive / GIB:9.1f} GiB")
    print("    (dcor itself uses scipy cdist, O(n^2) memory, but no autograd and numpy only)")
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

    plain, nopeek = [], []
    for _ in range(3):  # warm-up
        step(False), step(True)
    for _ in range(15):  # interleaved, so drift hits both equally
        plain.append(_median_seconds(lambda: step(False), warmup=0, reps=1))
        nopeek.append(_median_seconds(lambda: step(True), warmup=0, reps=1))
    t_plain, t_nopeek = statistics.median(plain), statistics.median(nopeek)
    print(f"(c) batch {batch}, 3x32x32, cut after conv block 2 (64x8x8 = 4096-dim), alpha={alpha}")
    print(f"    plain step  (CE)               : {t_plain * 1e3:9.2f} ms")
    print(f"    NoPeek step (CE + alpha*dCor)  : {t_nopeek * 1e3:9.2f} ms")
    return {"plain": t_plain, "nopeek": t_nopeek, "ratio": t_nopeek / t_plain}


# ---------------------------------------------------------------------------- summary


def main() -> None:
    """Run (a), (b), (c) and print a summary table."""
    torch.set_num_threads(THREADS)
    np.random.seed(0)
    print(f"torch {torch.__version__}, {THREADS} threads, CUDA: {torch.cuda.is_available()}\n")
    speed = bench_speed()
    print()
    memory = bench_memory()
    print()
    step = bench_step()
    rows = [
        (
            "(a) speed dcor / ours",
            f"{speed['ratio']:.1f}x",
            ">= 100x",
            speed["ratio"] >= 100,
        ),
        (
            "(b) memory naive / ours",
            f"{memory['ours'] / 2**20:.0f} MiB vs {memory['naive'] / GIB:.0f} GiB",
            "O(N^2)",
            memory["ours"] < 1 * GIB,
        ),
        (
            "(c) NoPeek step / plain step",
            f"{step['ratio']:.2f}x",
            "<= 1.25x",
            step["ratio"] <= 1.25,
        ),
    ]
    print("\nsummary")
    print(f"{'benchmark':<30} {'result':<24} {'goal':<10} met")
    print("-" * 70)
    for name, result, goal, met in rows:
        print(f"{name:<30} {result:<24} {goal:<10} {'yes' if met else 'NO'}")


if __name__ == "__main__":
    main()
