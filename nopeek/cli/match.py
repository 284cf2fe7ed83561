"""``nopeek match``: ExpertMatcher, a server picks the expert for a client's representations."""

from __future__ import annotations

import argparse

from nopeek.cli.commands import summary


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "match",
        help=summary("match"),
        description="The server fits one expert and one autoencoder per domain; the client "
        "sends only its samples' hidden representations; each goes to the expert whose "
        "autoencoder reconstructs it best. Writes match.json to --out.",
    )
    p.add_argument(
        "--experts",
        required=True,
        help="comma-separated domains: digits, digits:inverted, digits:rotated, digits:noisy, "
        "or data files (npz:PATH, csv:PATH, imagefolder:PATH)",
    )
    p.add_argument("--client-data", required=True, dest="client_data", help="the client's domain")
    p.add_argument("--seed", type=int, default=0, help="seed, 0 to 2**31 - 1 (default 0)")
    p.add_argument("--out", required=True, help="folder to write (a new nopeek match folder)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nopeek.cli._fmt import metric, number
    from nopeek.eval.expertmatcher import run_match

    experts = [e.strip() for e in args.experts.split(",") if e.strip()]
    m = run_match(experts, args.client_data, seed=args.seed, out=args.out, overwrite=args.overwrite)
    print(
        f"{m['n_samples']} samples of {m['client_data']}: "
        f"{metric('assignment accuracy', m['assignment_accuracy'])} (batch -> "
        f"{m['batch_expert']}), {metric('accuracy', m['accuracy'])} (oracle "
        f"{number(m['oracle_accuracy'])}), {m['bytes_sent']} bytes sent, raw inputs sent: "
        f"{m['raw_inputs_sent']}; attack {metric('ssim', m['attack_ssim'])} (baseline "
        f"{number(m['attack_baseline_ssim'])}) -> {args.out}"
    )
    return 0
