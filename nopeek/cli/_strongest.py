"""``--strongest`` / ``--attack-budget``: search each attack's family, report the worst case.

Shared by ``nopeek attack`` (and whatever else re-attacks a run); torch loads only in
:func:`run_strongest`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nopeek.cli._fmt import metric, number

if TYPE_CHECKING:  # (above the core: unchecked here, Any to mypy)
    from nopeek.attacks.search import Strongest
    from nopeek.attacks.spec import AttackRun


def attack_budget(text: str) -> int:
    """argparse type of ``--attack-budget``: a whole number >= 1 (one line on a bad value)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a whole number >= 1 (configurations at the first rung), got {text!r}"
        )
    return value


def add_strongest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--strongest",
        action="store_true",
        help="search each attack's strength knobs (successive halving over a seeded sample of "
        "its grid, the last rung over 3 attack seeds) and report the worst case; writes "
        "attacks/<attack>.strongest.json in the run (or audit) folder",
    )
    p.add_argument(
        "--attack-budget",
        type=attack_budget,
        dest="attack_budget",
        help="with --strongest: configurations at the first rung (default 4; an attack then "
        "runs 4 + 2 + 3 seeds + 1 (the defaults at full steps) = 10 times)",
    )


def _config(config: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items() if v is not None) or "defaults"


def _line(s: Strongest) -> str:
    """One search: the worst case and the configuration reaching it, the survivor's interval."""
    j = s.to_json()
    worst, winner = j["worst"], j["winner"]
    seen = ""
    if worst.get("ssim") is not None:
        seen = f" ({metric('ssim', worst['ssim'])}, baseline {number(worst['baseline_ssim'])})"
    ci = winner["ci95"]
    interval = "" if ci is None else f", 95% CI {number(ci[0])}-{number(ci[1])}"
    seeds = ",".join(str(x) for x in j["seeds"])
    known = []
    if s.known.fresh_noise:
        known.append("fresh noise per message")
    if s.known.defender_widths:
        known.append(f"defender's decoder widths {dict(s.known.defender_widths)}")
    knows = f" (knows: {'; '.join(known)})" if known else ""
    configs = len({tuple(sorted(m["config"].items())) for m in j["members"]})
    drawn = f"{configs} configuration" + ("s" if configs != 1 else "")
    steps = "" if worst["steps"] is None else f"steps {worst['steps']}, "
    return (
        f"{s.attack} strongest of {len(j['members'])} runs ({drawn}, "
        f"{j['seconds']:.0f} s) at cut {s.cut}{knows}: worst {metric('leak', worst['leak'])}"
        f"{seen} at {_config(worst['config'])} ({steps}seed {worst['seed']}); "
        f"winner {_config(winner['config'])} over seeds {seeds}: "
        f"mean {metric('leak', winner['mean'])}{interval}, max {number(winner['max'])}"
        f"  -> {s.path}"
    )


def run_strongest(args: argparse.Namespace, attacks: Sequence[AttackRun]) -> int:
    """Search every attack of ``attacks`` (:class:`~nopeek.attacks.spec.AttackRun`), one line
    each, then the verdict: the worst case over them."""
    from nopeek.attacks.search import DEFAULT_BUDGET, strongest, worst_of
    from nopeek.defenses import run_sender
    from nopeek.defenses.knowledge import simulated_decoders
    from nopeek.errors import ConfigError

    if not args.strongest:
        raise ConfigError("--attack-budget sizes the --strongest search; add --strongest")

    shared = {"steps": args.steps, "aux_size": args.aux_size}
    results = []
    for attack in attacks:
        budget = {k: v for k, v in (shared | attack.budget).items() if k != "n_samples"}
        pinned = attack.options | {k: v for k, v in budget.items() if v is not None}
        result = strongest(
            args.run,
            attack.name,
            budget=args.attack_budget or DEFAULT_BUDGET,
            seed=args.seed,
            pinned=pinned,
            n_samples=attack.budget.get("n_samples", args.n_samples),
            cut=args.cut,
            party=args.party,
            observations=args.observations,
            sender=run_sender,
            defender_decoders=simulated_decoders,
        )
        print(_line(result))
        results.append(result)
    if len(results) > 1:
        w = worst_of(results)
        print(f"verdict: worst {metric('leak', w.leak)} by {w.attack} at {_config(w.worst.config)}")
    return 0
