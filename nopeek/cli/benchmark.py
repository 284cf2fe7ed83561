"""``nopeek benchmark``: an attack x defense grid over configurations and data sets; one table."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from nopeek.cli.commands import summary
from nopeek.workers import warm

if TYPE_CHECKING:  # (above the core: unchecked here, Any to mypy)
    from nopeek.eval.benchmark import BenchmarkSpec

S = argparse.SUPPRESS
_TRAIN = {
    "epochs": (int, "training epochs per run (default 8)"),
    "batch_size": (int, "batch size (default 64)"),
    "lr": (float, "learning rate (default 1e-3)"),
    "max_train": (int, "keep a stratified subset of the training split"),
    "record_samples": (int, "samples per epoch kept for attacks (default 128)"),
    "dcor_samples": (int, "test samples for dCor and reconstruction victims (default 200)"),
    "device": (str, "auto | cpu | cuda (default auto)"),
    "data_root": (str, "folder holding MNIST / CIFAR-10: both join the grid when found there"),
}


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "benchmark",
        help=summary("benchmark"),
        description="Train every configuration x data set x --defense setting over --seeds, "
        "attack each run with every --attack, and write OUT/table.md, table.csv, table.json "
        "and heatmap.png: the leak and accuracy per cell (mean ± std over seeds) with VFLAIR's "
        "defense capability scores (DCS, T-DCS, C-DCS). A cell where an attack or a defense "
        "does not apply says why. Finished runs and attack results in OUT are reused.",
    )
    p.add_argument(
        "--configuration",
        default="vanilla,u-shaped,vertical",
        help="comma-separated: vanilla, u-shaped, vertical (2 clients) (default all three)",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="comma-separated data sets (default digits,breast-cancer, plus mnist and cifar10 "
        "where --data-root holds them)",
    )
    p.add_argument(
        "--defense",
        action="append",
        dest="defenses",
        default=None,
        help="a defense setting, repeatable: none, alpha=A (NoPeek), a defense spec, or several "
        "joined by '+' (alpha=1+cut-noise:gaussian,sigma=0.5,clip=1); 'none' is always in "
        "(default none, alpha=1, cut-noise:gaussian,sigma=0.5,clip=1)",
    )
    p.add_argument(
        "--attack",
        action="append",
        dest="attacks",
        default=None,
        help="attacks, comma-separated, each with its own options (fora:width=64); repeatable; "
        "'all' for every registered attack (default white-box,inverse-network,fora,grn,norm)",
    )
    p.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    for key, (kind, text) in _TRAIN.items():
        p.add_argument("--" + key.replace("_", "-"), dest=key, type=kind, default=S, help=text)
    p.add_argument("--steps", type=int, default=200, help="steps of each attack (default 200)")
    p.add_argument("--aux-size", type=int, default=None, help="aux samples (default: all)")
    p.add_argument("--n-samples", type=int, default=None, help="victims per attack")
    p.add_argument("--out", default="benchmarks/latest", help="folder (default benchmarks/latest)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (default 1)")
    p.add_argument("--overwrite", action="store_true", help="redo every run and attack in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def spec_of(args: argparse.Namespace) -> BenchmarkSpec:
    """The :class:`~nopeek.eval.benchmark.BenchmarkSpec` the arguments ask for."""
    from nopeek.attacks import ATTACKS
    from nopeek.eval import benchmark as B
    from nopeek.eval.settings import parse_attacks, parse_ints

    attacks = parse_attacks(args.attacks or [",".join(B.DEFAULT_ATTACKS)])
    if attacks == ["all"]:
        attacks = ATTACKS.names()
    train = B.DEFAULT_TRAIN | {k: getattr(args, k) for k in _TRAIN if hasattr(args, k)}
    data_root = train.get("data_root")
    datasets = _list(args.dataset) if args.dataset else B.default_datasets(data_root)
    budget = {"steps": args.steps, "aux_size": args.aux_size, "n_samples": args.n_samples}
    return B.BenchmarkSpec(
        configurations=_list(args.configuration),
        datasets=datasets,
        defenses=list(args.defenses or B.DEFAULT_DEFENSES),
        attacks=attacks,
        seeds=parse_ints(args.seeds, what="--seeds"),
        train=train,
        attack_options={k: v for k, v in budget.items() if v is not None},
    )


def run(args: argparse.Namespace) -> int:
    if args.jobs > 1:
        warm()  # the workers' imports overlap this process's own
    from nopeek.eval.benchmark import run_benchmark

    spec = spec_of(args)
    began = time.perf_counter()
    cells = run_benchmark(
        spec, args.out, jobs=args.jobs, overwrite=args.overwrite, quiet=args.quiet
    )
    na = sum(c["status"] != "ok" for c in cells)
    print(
        f"{len(cells)} cell{'s' * (len(cells) != 1)} ({na} n/a) in "
        f"{time.perf_counter() - began:.1f} s "
        f"-> {args.out}/table.md, table.csv, heatmap.png"
    )
    return 0
