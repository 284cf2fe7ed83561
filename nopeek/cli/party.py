"""``nopeek party``: run one party of a distributed split-learning run (this host's part).

Start one process per party, each with the same train flags::

    nopeek party --role client:0 --rank 0 --world-size 2 --master-addr A --master-port P --out D
    nopeek party --role server   --rank 1 --world-size 2 --master-addr A --master-port P --out D

or all of them on one host with ``torchrun --nproc-per-node 2 -m nopeek.cli.party --out D ...``
(ranks and the meeting point from torchrun's environment). Rank r runs the topology's r-th
party; each writes ``D/<party>/``, and the party holding the labels writes ``metrics.json``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nopeek.cli.commands import summary
from nopeek.config import TrainConfig
from nopeek.runtime.launch import DEFAULT_TIMEOUT, PartyLaunch

S = argparse.SUPPRESS


def _add_party_args(p: argparse.ArgumentParser, *, env: bool) -> None:
    from nopeek.cli.train import add_train_args

    add_train_args(p)
    need = not env
    p.add_argument("--role", default=None, help="server | client:<i> (checked against the rank)")
    p.add_argument("--rank", type=int, required=need, default=None, help="this party's rank")
    p.add_argument(
        "--world-size", type=int, dest="world_size", required=need, default=None,
        help="number of parties",
    )  # fmt: skip
    p.add_argument("--master-addr", dest="master_addr", default="127.0.0.1", help="meeting host")
    p.add_argument("--master-port", dest="master_port", type=int, default=29500, help="its port")
    p.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT,
        help=f"seconds every receive waits for a peer (default {DEFAULT_TIMEOUT:g})",
    )  # fmt: skip


def add_parser(sub) -> None:
    p = sub.add_parser(
        "party",
        help=summary("party"),
        description=__doc__.splitlines()[0],
        argument_default=S,
    )
    _add_party_args(p, env=False)
    p.set_defaults(handler=run)


_PARTY_FLAGS = {"role", "rank", "world_size", "master_addr", "master_port", "timeout"}


def _config(args: argparse.Namespace) -> TrainConfig:
    from nopeek.cli.train import given_fields  # the same fields and --defense syntax as train

    return TrainConfig(**given_fields(args, exclude=frozenset(_PARTY_FLAGS)))


def run(args: argparse.Namespace) -> int:
    from nopeek.trainer import train

    if args.rank is None or args.world_size is None:
        launch = PartyLaunch.from_env(timeout=args.timeout, role=args.role)
    else:
        launch = PartyLaunch(
            args.rank, args.world_size, args.master_addr, args.master_port, args.timeout, args.role
        )
    result = train(
        _config(args),
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        quiet=args.quiet,
        launch=launch,
    )
    m = result.metrics
    if m is None:
        print(f"party done -> {result.run_dir}")
    else:
        keys = ["test_accuracy", "dcor_test", "wire_bytes_total", "payload_bytes_total"]
        print("  ".join(f"{k} {m[k]:.6g}" for k in keys if k in m) + f"  -> {result.run_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nopeek.cli.party`` (torchrun): ranks from the environment, same train flags."""
    from nopeek.cli.main import _Parser, run_handler

    parser = _Parser(
        prog="nopeek.cli.party", description=__doc__.splitlines()[0], argument_default=S
    )
    _add_party_args(parser, env=True)
    parser.add_argument("-v", "--verbose", action="store_true", default=False)
    args = parser.parse_args(argv)
    args.handler = run
    return run_handler(args)


if __name__ == "__main__":
    sys.exit(main())
