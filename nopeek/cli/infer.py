"""``nopeek infer``: serve predictions of a trained run through its cut (split inference)."""

from __future__ import annotations

import argparse

from nopeek.cli.commands import summary


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "infer",
        help=summary("infer"),
        description="Run samples through the trained parties of RUN, every cut through the "
        "channel (phase inference); writes predictions.csv, observations.pt (what the server "
        "saw, for `nopeek attack --observations`) and inference.json to --out.",
    )
    p.add_argument("--run", required=True, help="run directory written by `nopeek train`")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--split",
        default="test",
        help="test | aux | train, or several comma-separated (test,aux: the aux rows then give "
        "the known-pairs attack its pairs): splits of the run's data (test)",
    )
    where.add_argument(
        "--dataset", help="a data spec (npz:PATH, csv:PATH, ...): predict every sample of it"
    )
    p.add_argument("--out", required=True, help="folder to write (a new nopeek inference folder)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nopeek.cli._fmt import metric
    from nopeek.inference import infer

    result = infer(
        args.run, split=args.split, dataset=args.dataset, out=args.out, overwrite=args.overwrite
    )
    m = result.metrics
    acc = f" {metric('accuracy', m['accuracy'])}" if "accuracy" in m else ""
    print(
        f"{m['n_samples']} predictions of {m['data']}{acc}; {m['messages']} messages, "
        f"{m['bytes_client_to_server']} bytes client -> server -> {result.out}"
    )
    return 0
