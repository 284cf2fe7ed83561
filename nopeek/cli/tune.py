"""``nopeek tune``: the most accurate defense setting whose leakage stays within a budget."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from nopeek.cli._fmt import metric, number
from nopeek.cli._strongest import attack_budget
from nopeek.cli.commands import summary
from nopeek.cli.sweep import add_base_args, attack_options, base_config
from nopeek.eval import defaults
from nopeek.eval.settings import parse_attacks, parse_ints
from nopeek.workers import warm

if TYPE_CHECKING:  # (above the core: unchecked here, Any to mypy)
    from nopeek.eval.summary import SettingSummary, Stat
    from nopeek.eval.tune import Budget, TuneResult

# the default sweeps' attacks (nopeek.eval.defaults), as one --attack value each
RECON_ATTACKS = ",".join(defaults.RECON_ATTACKS)
LABEL_ATTACKS = ",".join(defaults.LABEL_ATTACKS)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "tune",
        help=summary("tune"),
        description="Search NoPeek's alpha, cut noise and (for label budgets) label-gradient "
        "noise, alone and combined, by bisection on each one's strength; report the most "
        "accurate setting whose mean leakage over --seeds, under the strongest of the "
        "--attack attacks, meets the budget and whose accuracy stays within "
        "--max-accuracy-drop of the undefended run, or say that none does and which setting "
        "came closest. Every tried setting is a run in OUT (a sweep: `nopeek report --sweep "
        "OUT` shows it); OUT/tune.json holds the answer.",
    )
    add_base_args(p)
    p.add_argument(
        "--max-leak",
        type=float,
        default=None,
        help="the strongest attack's leak must stay at or below this, on any data: 0 = no "
        "better than a blind guess, 1 = exact (images: SSIM over the mean image's; tabular: "
        "R2 over the mean row's; labels: worst-epoch AUC over chance), e.g. 0.2",
    )
    p.add_argument(
        "--max-ssim", type=float, default=None, help="images only: SSIM must stay below this"
    )
    p.add_argument(
        "--max-label-auc",
        type=float,
        default=None,
        help="label leak, max(AUC, 1 - AUC) at the worst epoch, must stay at or below this "
        "(binary tasks)",
    )
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=None,
        help="never return a setting whose test accuracy is more than this many percentage "
        "points below the undefended run's (default 5)",
    )
    p.add_argument(
        "--attack",
        action="append",
        dest="attacks",
        default=None,
        help=f"attacks to measure leakage (default: {RECON_ATTACKS} (plus "
        f"{defaults.TABULAR_ATTACKS[0]} on tabular data) for --max-leak and "
        f"--max-ssim, plus {LABEL_ATTACKS} for --max-label-auc)",
    )
    p.add_argument(
        "--search",
        default=None,
        help="knobs to turn, with optional strongest value: alpha, cut-noise, isotropic, "
        "marvell, adversarial (default alpha,cut-noise; plus isotropic for --max-label-auc); "
        "e.g. alpha=4,adversarial=2",
    )
    p.add_argument("--iterations", type=int, default=3, help="bisection rounds (default 3)")
    p.add_argument(
        "--attack-budget",
        type=attack_budget,
        dest="attack_budget",
        help="the answer is certified only after every seed's run of it is re-attacked with "
        "each attack's full family search (as `nopeek attack --strongest`); this many "
        "configurations at its first rung (default 4)",
    )
    p.add_argument("--out", default="tunes/latest", help="tune directory (default tunes/latest)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.jobs > 1:
        warm()  # the workers' imports overlap this process's own
    from nopeek.eval.settings import Setting
    from nopeek.eval.sweep import SweepSpec
    from nopeek.eval.tune import Budget, parse_knobs, tune

    limits = {"max_leak": args.max_leak, "max_ssim": args.max_ssim}
    limits["max_label_auc"] = args.max_label_auc
    if args.max_accuracy_drop is not None:  # else Budget's default
        limits["max_accuracy_drop"] = args.max_accuracy_drop
    budget = Budget(**limits)
    recon = budget.max_leak is not None or budget.max_ssim is not None
    base = base_config(args)
    recon_default = ",".join(defaults.recon_attacks(base))  # + white-box-prior on tables
    default_attacks = ([recon_default] if recon else []) + (
        [LABEL_ATTACKS] if budget.max_label_auc is not None else []
    )
    search = args.search or (
        "alpha,cut-noise" + (",isotropic" if budget.max_label_auc is not None else "")
    )
    spec = SweepSpec(
        base=base,
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
        attack_budget=args.attack_budget,
    )
    print_result(result, budget)
    return 0


def _mean(name: str, stat: Stat | None) -> str:
    return metric(name, None if stat is None else stat.mean)


def _leaks(s: SettingSummary) -> str:
    """``leak 0.930  ssim 0.870``: the leak, and SSIM and label AUC where measured."""
    shown = [("leak", s.leakage), ("ssim", s.best_ssim), ("label_auc", s.label_auc)]
    return "  ".join(_mean(k, v) for k, v in shown if k == "leak" or v is not None)


def _limits(budget: Budget) -> str:
    limits = []
    if budget.max_leak is not None:
        limits.append(f"leak <= {number(budget.max_leak)}")
    if budget.max_ssim is not None:
        limits.append(f"ssim < {number(budget.max_ssim)}")
    if budget.max_label_auc is not None:
        limits.append(f"label auc_folded_max <= {number(budget.max_label_auc)}")
    if budget.max_accuracy_drop is not None:
        limits.append(f"accuracy_drop <= {budget.max_accuracy_drop:g} points")
    return " and ".join(limits)


_MISSES = {  # budget_misses key -> (printed name, SettingSummary field, Budget field)
    "leak": ("leak", "leakage", "max_leak"),
    "ssim": ("ssim", "best_ssim", "max_ssim"),
    "label_auc": ("label_auc", "label_auc", "max_label_auc"),
}


def _missed(misses: dict[str, float], summary: SettingSummary, budget: Budget) -> str:
    """``leak 0.350 above budget 0.200 by 0.150; accuracy_drop 7.2 points, 2.2 over 5``."""
    said = []
    for key, (name, field, limit) in _MISSES.items():
        if key in misses:
            said.append(f"{metric(name, getattr(summary, field).mean)} above budget "
                        f"{number(getattr(budget, limit))} by {number(misses[key])}")  # fmt: skip
    if "accuracy_drop" in misses:
        over, allowed = misses["accuracy_drop"], budget.max_accuracy_drop
        said.append(f"accuracy_drop {over + allowed:.1f} points, {over:.1f} over {allowed:g}")
    return "; ".join(said)


def print_result(result: TuneResult, budget: Budget) -> None:
    print(f"budget: {_limits(budget)} (strongest attack, mean over seeds)")
    ref = result.reference_accuracy
    for setting, s, ok in result.candidates():
        drop = "" if ref is None else f"  accuracy_drop {100 * (ref - s.accuracy.mean):.1f} points"
        print(f"{setting.label}: {_mean('accuracy', s.accuracy)}{drop}  {_leaks(s)}  "
              f"meets: {'yes' if ok else 'no'}")  # fmt: skip
    _print_certificates(result)
    if result.best is None and result.certificates:
        print("no setting holds under the full re-attack: every one that met the budget with "
              "the screening attacks was broken by a searched attacker (see above); try "
              "stronger values or a looser budget")  # fmt: skip
        return
    if result.best is None:
        closest = result.closest()
        near = ""
        if closest is not None:
            missed = _missed(result.misses[closest], result.evaluated[closest], budget)
            near = f"; closest: {closest.label} ({missed})"
        print(f"no setting in the search space meets the budget{near}")
        floor = [r.get("baseline_ssim") for s in result.evaluated.values() for r0 in s.runs
                 for r in r0.attacks.values() if r.get("baseline_ssim") is not None]  # fmt: skip
        if floor and budget.max_ssim is not None and budget.max_ssim <= min(floor):
            print(f"note: a data-free guess (the mean auxiliary image) already scores "
                  f"{metric('ssim', min(floor))} here, so no defense can push an attack below "
                  f"{budget.max_ssim}; budget --max-leak instead")  # fmt: skip
        return
    b = result.best
    cost = "" if ref is None else f"  accuracy_drop {100 * (ref - b.accuracy.mean):.1f} points"
    cert = result.certificate
    print(f"best: {b.label}  accuracy {b.accuracy.fmt()}{cost}  {_leaks(b)}  certified: "
          f"searched worst {metric('leak', cert.leak)}, margin {number(cert.margin)}")  # fmt: skip


def _print_certificates(result: TuneResult) -> None:
    """One line per setting re-attacked at full strength: its searched worst case, by whom."""
    for cert in result.certificates.values():
        w = cert.worst
        config = ",".join(f"{k}={v}" for k, v in w["config"].items() if v is not None)
        verdict = "certified" if cert.certified else "NOT certified"
        print(f"re-attack {cert.setting.label}: searched worst {metric('leak', cert.leak)} by "
              f"{w['attack']} at {config or 'defaults'} (run seed {w['seed']}, attack seed "
              f"{w['attack_seed']}); margin {number(cert.margin)}: {verdict}")  # fmt: skip
