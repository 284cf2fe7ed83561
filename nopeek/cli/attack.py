"""``nopeek attack``: run a reconstruction or label-inference attack on a finished run."""

from __future__ import annotations

import argparse
from typing import Any

from nopeek.cli._fmt import metric, number
from nopeek.cli._strongest import add_strongest_args, run_strongest
from nopeek.cli.commands import summary


def add_budget_args(p: argparse.ArgumentParser) -> None:
    """``--steps`` and ``--n-samples``: how hard an attack tries, on how many victims."""
    p.add_argument("--steps", type=int, help="optimisation steps (default: per attack)")
    p.add_argument(
        "--n-samples",
        type=int,
        dest="n_samples",
        help="victims to attack, smallest ids first (default: per attack)",
    )


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "attack",
        help=summary("attack"),
        description="Run an attack on what crossed the cut of a finished run; writes "
        "RUN/attacks/<attack>.json (and a PNG of reconstructions for images).",
    )
    p.add_argument("--run", required=True, help="run directory written by `nopeek train`")
    p.add_argument(
        "--attack",
        action="append",
        dest="attacks",
        required=True,
        help="attacks to run, comma-separated, each optionally with its own options, e.g. "
        "white-box:tv=0,inverse-network:width=64 (repeatable; names: white-box | "
        "inverse-network | unsplit | norm | direction | grad-match | ...)",
    )
    add_budget_args(p)
    p.add_argument(
        "--aux-size",
        type=int,
        dest="aux_size",
        help="auxiliary samples the attacker holds (default: the whole aux split)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="the attack's seed, 0 to 2**31 - 1 (default 0)"
    )
    p.add_argument("--cut", help="cut to attack (default: the data party's first cut)")
    p.add_argument(
        "--party",
        help="whose messages the attacker observes at the cut, e.g. client1 in a vertical or "
        "many-clients run (default: the first data party; label attacks: the first party "
        "receiving gradients without the labels)",
    )
    p.add_argument(
        "--observations",
        help="attack this observations file instead of RUN/observations.pt (e.g. the one "
        "`nopeek infer` wrote while serving)",
    )
    add_strongest_args(p)
    p.set_defaults(handler=run)


def result_summary(m: dict[str, Any]) -> str:
    """The result's metrics, each after its name (:mod:`nopeek.cli._fmt`), ``leak`` first."""
    parts = [metric("leak", m.get("leak"))]
    if m["kind"] == "label":
        if m["auc"] is None:
            return "leak n/a (one class only)"
        parts.append(f"{metric('auc', m['auc'])} ({m['auc_orientation']})")
        worst = metric("auc_folded_max", m["auc_folded_max"])
        if len(m.get("epochs") or []) > 1:
            worst += f" at epoch {m['auc_folded_max_epoch'] + 1} of {len(m['epochs'])}"
        parts.append(f"{worst} (chance {number(m['chance_auc_folded_max'])})")
        if "accuracy" in m:
            parts.append(metric("accuracy", m["accuracy"]))
        return "  ".join(parts)
    parts += [
        f"{metric(k, m[k])} (baseline {number(m['baseline_' + k])})"
        for k in ("ssim", "psnr", "mse")
        if m[k] is not None
    ]
    if m.get("r2") is not None:
        parts.append(metric("r2", m["r2"]))
    if m.get("tolerance") is not None:
        within = f"rows_within_{100 * m['tolerance']:g}%"
        parts.append(
            f"{metric(within, m['rows_within_tolerance'])} "
            f"(baseline {number(m['baseline_rows_within_tolerance'])})"
        )
    if m.get("categorical_exact") is not None:
        parts.append(
            f"{metric('categorical_exact', m['categorical_exact'])} "
            f"(baseline {number(m['baseline_categorical_exact'])})"
        )
    if m["dcor_reconstruction"] is not None:
        parts.append(metric("dcor_reconstruction", m["dcor_reconstruction"]))
    return "  ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Run every ``--attack`` in turn (all checked first), one summary line each."""
    from nopeek.attacks.harness import run_attack
    from nopeek.attacks.spec import parse_attack_runs
    from nopeek.defenses import run_sender

    if args.strongest or args.attack_budget is not None:
        return run_strongest(args, parse_attack_runs(args.attacks))
    shared = {"steps": args.steps, "aux_size": args.aux_size, "n_samples": args.n_samples}
    for attack in parse_attack_runs(args.attacks):
        result = run_attack(
            args.run,
            attack.name,
            options=attack.options or None,
            seed=args.seed,
            cut=args.cut,
            party=args.party,
            observations=args.observations,
            sender=run_sender,
            **(shared | attack.budget),
        )
        m = result.to_json()
        print(
            f"{m['attack']} at cut {m['cut']} ({m['party']} -> {m['receiver']}) on "
            f"{m['n_samples']} samples: {result_summary(m)}  -> {result.path}"
        )
    return 0
