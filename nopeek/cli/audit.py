"""``nopeek audit``: attack a client segment exported from your own deployment."""

from __future__ import annotations

import argparse

from nopeek.cli._strongest import add_strongest_args
from nopeek.cli.attack import add_budget_args
from nopeek.cli.commands import summary


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "audit",
        help=summary("audit"),
        description="Record what an exported client segment sends for the victims, run "
        "reconstruction attacks under their threat models and write OUT/attacks/<attack>.json "
        "(+ .png) and OUT/report.md. A data file (npz:, csv:, imagefolder:) is read whole, labels "
        "optional: every row of --victims is a victim, every row of --aux the attacker's. A "
        "bundled set, or one file given as both, is split as `nopeek train` splits it: the "
        "victims are its test split, the attacker holds its aux split.",
    )
    p.add_argument(
        "--client-model",
        dest="client_model",
        help="the client segment: .pt2 (torch.export.save) or .pt (TorchScript)",
    )
    p.add_argument(
        "--activations",
        help="what crossed the wire instead of recording it: .npz or .pt holding "
        "'activations' (M, ...) and 'ids' (M,) of --victims samples",
    )
    p.add_argument(
        "--victims",
        required=True,
        help="data set spec of the victims: npz:PATH (y optional) | csv:PATH (--target optional) "
        "| imagefolder:PATH | digits ...",
    )
    p.add_argument("--aux", required=True, help="data set spec of the attacker's own data")
    p.add_argument(
        "--attack",
        action="append",
        dest="attacks",
        required=True,
        help="comma-separated reconstruction attacks with options, e.g. "
        "white-box:tv=0,inverse-network:width=32 (repeatable)",
    )
    p.add_argument("--out", required=True, help="folder to write the audit into")
    add_budget_args(p)
    p.add_argument(
        "--seed", type=int, default=0, help="splits and attack seed, 0 to 2**31 - 1 (default 0)"
    )
    p.add_argument("--target", help="csv:PATH data: the label column (victims: optional)")
    p.add_argument("--image-size", type=int, dest="image_size", help="imagefolder:PATH: NxN")
    p.add_argument("--data-root", dest="data_root", help="folder holding MNIST/CIFAR-10 files")
    p.add_argument("--overwrite", action="store_true", help="replace an existing audit folder")
    add_strongest_args(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nopeek.attacks.audit import (
        BUDGET,
        AuditInputs,
        audit,
        load_activations,
        load_client_model,
        load_data,
    )
    from nopeek.attacks.search import DEFAULT_BUDGET
    from nopeek.attacks.spec import parse_attack_runs
    from nopeek.errors import ConfigError
    from nopeek.observe import Observed

    if args.client_model is None and args.activations is None:
        raise ConfigError("give --client-model FILE (the exported segment) or --activations FILE")
    if args.attack_budget is not None and not args.strongest:
        raise ConfigError("--attack-budget sizes the --strongest search; add --strongest")
    runs = parse_attack_runs(args.attacks, budget=BUDGET)
    names, options = [r.name for r in runs], {r.name: r.options | r.budget for r in runs}
    segment = load_client_model(args.client_model) if args.client_model else None
    recorded = None
    if args.activations:
        z, ids = load_activations(args.activations)
        zeros = ids.new_zeros(len(ids))
        recorded = Observed(z, ids, zeros, zeros.clone())
    data = {"target": args.target, "image_size": args.image_size, "data_root": args.data_root}
    victims, aux = load_data(args.victims, args.aux, seed=args.seed, **data)
    results = audit(
        AuditInputs(segment, recorded, victims, aux),
        names,
        args.out,
        steps=args.steps,
        n_samples=args.n_samples,
        seed=args.seed,
        overwrite=args.overwrite,
        label=args.client_model or args.activations,
        options=options,
        attack_budget=(args.attack_budget or DEFAULT_BUDGET) if args.strongest else None,
    )
    from nopeek.cli.attack import result_summary

    for r in results:
        print(f"{r.attack} on {r.n_samples} victims: {result_summary(r.to_json())}  -> {r.path}")
    if args.strongest:
        print(f"each result is its attack's worst case over its family (--strongest): "
              f"{args.out}/attacks/<attack>.strongest.json")  # fmt: skip
    print(f"report: {args.out}/report.md")
    return 0
