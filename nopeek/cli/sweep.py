"""``nopeek sweep``: train one run per setting x seed, attack each, write results.csv/json."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from nopeek.cli.commands import summary
from nopeek.config import TrainConfig
from nopeek.eval.defaults import SWEEP_ATTACKS
from nopeek.eval.settings import make_settings, parse_attacks, parse_floats, parse_ints
from nopeek.workers import warm

if TYPE_CHECKING:  # (above the core: unchecked here, Any to mypy)
    from nopeek.eval.summary import SettingSummary

S = argparse.SUPPRESS
_BASE = {
    "dataset": (str, "data set, or npz:PATH | csv:PATH | imagefolder:PATH (default digits)"),
    "target": (str, "csv:PATH data: the label column"),
    "image_size": (int, "imagefolder:PATH data: resize every image to NxN"),
    "model": (str, "reference model (default: per data set)"),
    "cut": (str, "cut name (default: the model's)"),
    "topology": (str, "any topology of `nopeek train --help` (default vanilla)"),
    "clients": (int, "clients of vertical / many-clients / splitfed (default 2)"),
    "merge": (str, "vertical: concat | sum | mean (default concat)"),
    "label_party": (str, "vertical: server or a client, e.g. client0 (default server)"),
    "tasks": (str, "multi-task: comma-separated tasks (default label,parity)"),
    "relay": (str, "many-clients: peer | server (default peer)"),
    "non_iid": (float, "many-clients / splitfed: Dirichlet concentration (default IID)"),
    "splitfed": (str, "splitfed: v1 | v2 (default v2)"),
    "local_epochs": (int, "splitfed: passes over a shard per round (default 1)"),
    "epochs": (int, "training epochs per run (default 30)"),
    "batch_size": (int, "batch size (default 64)"),
    "lr": (float, "learning rate (default 1e-3)"),
    "one_vs_rest": (int, "turn the task into 'class K vs rest' (needed by label attacks)"),
    "max_train": (int, "keep a stratified subset of the training split"),
    "record_samples": (int, "samples per epoch kept for attacks (default 256)"),
    "dcor_samples": (int, "test samples for dCor and reconstruction victims (default 1000)"),
    "device": (str, "auto | cpu | cuda (default auto)"),
    "data_root": (str, "folder holding MNIST/Fashion-MNIST/CIFAR-10"),
    "delta": (float, "delta for DP accounting (default 1e-5)"),
}
_ATTACK_OPTS = {
    "steps": "optimisation steps of each attack (default: the attack's)",
    "aux_size": "auxiliary samples for attacks that use them (default: all)",
    "n_samples": "victims per attack (default: the attack's)",
}


def add_base_args(p: argparse.ArgumentParser) -> None:
    """Options shared with ``nopeek tune``: the training config and the attack options."""
    for key, (kind, text) in _BASE.items():
        p.add_argument("--" + key.replace("_", "-"), dest=key, type=kind, default=S, help=text)
    p.add_argument(
        "--seeds",
        default="0",
        help="comma-separated seeds (each 0 to 2**31 - 1), one run each (default 0)",
    )
    for key, text in _ATTACK_OPTS.items():
        p.add_argument("--" + key.replace("_", "-"), dest=key, type=int, default=None, help=text)
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def base_config(args: argparse.Namespace) -> TrainConfig:
    """The training config common to every run (alpha, defenses and seed are set per run)."""
    given = {k: getattr(args, k) for k in _BASE if hasattr(args, k)}
    return TrainConfig(**given).resolved()


def attack_options(args: argparse.Namespace) -> dict[str, int | None]:
    return {k: getattr(args, k) for k in _ATTACK_OPTS}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sweep",
        help=summary("sweep"),
        description="Train one run per (alpha x --defense option x --compress option) x seed, "
        "run every --attack on each, and write OUT/results.csv and OUT/results.json (one row "
        "per run x attack). Finished runs in OUT are reused. The undefended setting (alpha 0, "
        "no defense, uncompressed) is always included. A --defense value is 'none' or defense "
        "specs joined by '+' (applied together), e.g. cut-noise:gaussian,sigma=0.5,clip=1+max-norm"
        "; a --compress value is 'none' or forward=SPEC,backward=SPEC, e.g. forward=topk:0.1.",
    )
    add_base_args(p)
    p.add_argument("--alpha", default="0", help="comma-separated NoPeek weights (default 0)")
    p.add_argument(
        "--defense",
        action="append",
        dest="defenses",
        default=None,
        help="a defense setting, repeatable: 'none' or spec[+spec...] (default none)",
    )
    p.add_argument(
        "--compress",
        action="append",
        dest="compress",
        default=None,
        help="a compressor setting, repeatable: 'none' or forward=SPEC,backward=SPEC as in "
        "`nopeek train --compress`, e.g. forward=topk:0.1 (default none)",
    )
    p.add_argument(
        "--attack",
        action="append",
        dest="attacks",
        default=None,
        help="attacks to run on every run: comma-separated names, each optionally with its own "
        "options (inverse-network:width=32); repeatable; 'none' for no attack "
        f"(default {','.join(SWEEP_ATTACKS)})",
    )
    p.add_argument("--out", default="sweeps/latest", help="sweep directory (default sweeps/latest)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="retrain everything into a new sweep that replaces OUT (only a sweep nopeek wrote) "
        "once it has finished",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.jobs > 1:
        warm()  # the workers' imports overlap this process's own
    from nopeek.eval.summary import summarize
    from nopeek.eval.sweep import SweepSpec, run_sweep

    spec = SweepSpec(
        base=base_config(args),
        settings=make_settings(
            parse_floats(args.alpha, what="--alpha"),
            args.defenses or ["none"],
            args.compress or ["none"],
        ),
        seeds=parse_ints(args.seeds, what="--seeds"),
        attacks=parse_attacks(args.attacks or SWEEP_ATTACKS),
        attack_options=attack_options(args),
    )
    began = time.perf_counter()
    rows = run_sweep(spec, args.out, jobs=args.jobs, overwrite=args.overwrite, quiet=args.quiet)
    print_summary(summarize(rows))
    n_runs = len(spec.settings) * len(spec.seeds)
    print(
        f"{n_runs} runs, {len(rows)} rows in {time.perf_counter() - began:.1f} s "
        f"-> {args.out}/results.csv"
    )
    return 0


def print_summary(summaries: Sequence[SettingSummary]) -> None:
    """One line per setting: accuracy, dCor, each attack's leak (mean ± std over seeds), the
    trade-off score and VFLAIR's C-DCS (n/a without the undefended setting)."""
    for s in summaries:
        attacks = "  ".join(f"{a} leak {st.fmt()}" for a, st in s.attacks.items())
        dcor = s.dcor.fmt() if s.dcor else "n/a"
        score = "n/a" if s.score is None else f"{s.score:.3f}"
        c_dcs = "n/a" if s.defense is None or s.defense.c_dcs is None else f"{s.defense.c_dcs:.3f}"
        print(
            f"{s.label:<40} accuracy {s.accuracy.fmt()}  dcor {dcor}  {attacks}  score {score}"
            f"  c_dcs {c_dcs}"
        )
