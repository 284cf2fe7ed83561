"""``nopeek tune``: the most accurate defense setting whose leakage stays within a budget."""

from __future__ import annotations

import argparse

from nopeek.cli.commands import summary
from nopeek.cli.sweep import add_base_args, attack_options, base_config
from nopeek.eval.settings import parse_attacks, parse_ints

RECON_ATTACKS = "inverse-network:steps=300,width=32,white-box:steps=300,n_samples=64"
LABEL_ATTACKS = "norm,direction"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "tune",
        help=summary("tune"),
        description="Search NoPeek's alpha, cut noise and (for label budgets) label-gradient "
        "noise, alone and combined, by bisection on each one's strength; report the most "
        "accurate setting whose mean leakage over --seeds, under the strongest of the "
        "--attack attacks, meets the budget, or say that none does (exit status 1). Every "
        "tried setting is a run in OUT (a sweep: `nopeek report --sweep OUT` shows it).",
    )
    add_base_args(p)
    p.add_argument("--max-ssim", type=float, default=None, help="SSIM must stay below this")
    p.add_argument(
        "--max-label-auc",
        type=float,
        default=None,
        help="label leak, max(AUC, 1 - AUC) at the worst epoch, must stay at or below this "
        "(binary tasks)",
    )
    p.add_argument(
        "--attack",
        action="append",
        dest="attacks",
        default=None,
        help=f"attacks to measure leakage (default: {RECON_ATTACKS} for --max-ssim, "
        f"plus {LABEL_ATTACKS} for --max-label-auc)",
    )
    p.add_argument(
        "--search",
        default=None,
        help="knobs to turn, with optional strongest value: alpha, cut-noise, isotropic, "
        "marvell, adversarial (default alpha,cut-noise; plus isotropic for --max-label-auc); "
        "e.g. alpha=4,adversarial=2",
    )
    p.add_argument("--iterations", type=int, default=3, help="bisection rounds (default 3)")
    p.add_argument("--out", default="tunes/latest", help="tune directory (default tunes/latest)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nopeek.eval.settings import Setting
    from nopeek.eval.sweep import SweepSpec
    from nopeek.eval.tune import Budget, parse_knobs, tune

    budget = Budget(args.max_ssim, args.max_label_auc)
    default_attacks = ([RECON_ATTACKS] if budget.max_ssim is not None else []) + (
        [LABEL_ATTACKS] if budget.max_label_auc is not None else []
    )
    search = args.search or (
        "alpha,cut-noise" + (",isotropic" if budget.max_label_auc is not None else "")
    )
    spec = SweepSpec(
        base=base_config(args),
        settings=[Setting()],
        seeds=parse_ints(args.seeds, what="--seeds"),
        attacks=parse_attacks(args.attacks or default_attacks),
        attack_options=attack_options(args),
    )
    result = tune(
        spec,
        args.out,
        knobs=parse_knobs(search),
        budget=budget,
        iterations=args.iterations,
        jobs=args.jobs,
        quiet=args.quiet,
    )
    print_result(result, budget)
    return 0 if result.best is not None else 1


def _cell(stat) -> str:
    return "—" if stat is None else f"{stat.mean:.3f}"


def print_result(result, budget) -> None:
    limits = []
    if budget.max_ssim is not None:
        limits.append(f"SSIM < {budget.max_ssim}")
    if budget.max_label_auc is not None:
        limits.append(f"label leak <= {budget.max_label_auc}")
    print(f"budget: {' and '.join(limits)} (strongest attack, mean over seeds)")
    print(f"{'setting':<60} {'accuracy':>8} {'SSIM':>6} {'leak':>6}  meets")
    for setting, s, ok in result.candidates():
        print(f"{setting.label:<60} {s.accuracy.mean:8.3f} {_cell(s.best_ssim):>6} "
              f"{_cell(s.label_auc):>6}  {'yes' if ok else 'no'}")  # fmt: skip
    if result.best is None:
        print("no setting in the search space meets the budget: try stronger values "
              "(--search alpha=16,cut-noise=1), more knobs, or a looser budget")  # fmt: skip
        floor = [r.get("baseline_ssim") for s in result.evaluated.values() for r0 in s.runs
                 for r in r0.attacks.values() if r.get("baseline_ssim") is not None]  # fmt: skip
        if floor and budget.max_ssim is not None and budget.max_ssim <= min(floor):
            print(f"note: a data-free guess (the mean auxiliary image) already scores SSIM "
                  f"{min(floor):.3f} here, so no defense can push an attack below "
                  f"{budget.max_ssim}")  # fmt: skip
        return
    b = result.best
    print(f"best: {b.label}  accuracy {b.accuracy.fmt()}  SSIM {_cell(b.best_ssim)}  "
          f"label leak {_cell(b.label_auc)}")  # fmt: skip
