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
from pathlib import Path

from nopeek.cli.commands import summary
from nopeek.config import TrainConfig
from nopeek.runtime.launch import DEFAULT_TIMEOUT, Launch, PartyLaunch

S = argparse.SUPPRESS


def _add_party_args(p: argparse.ArgumentParser) -> None:
    from nopeek.cli.train import add_train_args

    add_train_args(p)
    add_labels_arg(p)
    add_launch_args(p)


def add_labels_arg(p: argparse.ArgumentParser) -> None:
    """``--labels``: the label party's own file (with --id-column and --target)."""
    p.add_argument(
        "--labels",
        help="with --id-column: the label party's own file, csv:PATH, its labels in column "
        "--target (a party without features leaves --dataset out)",
    )


def add_launch_args(p: argparse.ArgumentParser) -> None:
    """Where this party meets the others and how it proves it belongs (party, align)."""
    p.add_argument("--role", default=None, help="server | client:<i> (checked against the rank)")
    p.add_argument("--rank", type=int, default=None, help="torch: this party's rank")
    p.add_argument(
        "--world-size", type=int, dest="world_size", default=None,
        help="torch: number of parties",
    )  # fmt: skip
    p.add_argument("--master-addr", dest="master_addr", default="127.0.0.1", help="meeting host")
    p.add_argument("--master-port", dest="master_port", type=int, default=29500, help="its port")
    p.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT,
        help=f"seconds every receive waits for a peer (default {DEFAULT_TIMEOUT:g})",
    )  # fmt: skip
    p.add_argument(
        "--transport", choices=("torch", "grpc"), default="torch",
        help="torch: torch.distributed, for a trusted network only (gloo, NCCL); grpc: gRPC with "
        "mutual TLS between institutions (needs --peers, --ca, --cert, --key)",
    )  # fmt: skip
    p.add_argument("--peers", default=None, help="grpc: party=host:port for every party")
    p.add_argument("--ca", default=None, help="grpc: the job CA's certificate (PEM)")
    p.add_argument("--cert", default=None, help="grpc: this party's certificate; names its role")
    p.add_argument("--key", default=None, help="grpc: this party's private key (PEM)")
    p.add_argument(
        "--job-secret-file", dest="job_secret_file", default=None,
        help="a file holding the job's shared secret (or set NOPEEK_JOB_SECRET): every party "
        "proves it holds it before anything is sent",
    )  # fmt: skip


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "party",
        help=summary("party"),
        description=__doc__.splitlines()[0],
        argument_default=S,
    )
    _add_party_args(p)
    p.set_defaults(handler=run)


_PARTY_FLAGS = {"role", "rank", "world_size", "master_addr", "master_port", "timeout"}
_PARTY_FLAGS |= {"transport", "peers", "ca", "cert", "key", "job_secret_file"}


def _config(args: argparse.Namespace) -> TrainConfig:
    from nopeek.cli.train import given_fields  # the same fields and --defense syntax as train

    return own_source(TrainConfig(**given_fields(args, exclude=frozenset(_PARTY_FLAGS))), args)


def own_source(config: TrainConfig, args: argparse.Namespace) -> TrainConfig:
    """With --id-column a party that gives no --dataset holds no features (not the default
    data set)."""
    if config.id_column is not None and getattr(args, "dataset", None) is None:
        config.dataset = ""
    return config


def make_launch(args: argparse.Namespace) -> Launch:
    """This process's place in the run: torch.distributed ranks, or gRPC peers and identity."""
    if args.transport == "grpc":
        from nopeek.errors import ConfigError
        from nopeek.runtime.grpc_channel import Identity
        from nopeek.runtime.grpc_launch import GrpcLaunch, parse_peers

        missing = [f"--{k}" for k in ("peers", "ca", "cert", "key") if getattr(args, k) is None]
        if missing:
            raise ConfigError(f"--transport grpc needs {', '.join(missing)}")
        identity = Identity.read(args.ca, args.cert, args.key)
        return GrpcLaunch(parse_peers(args.peers), identity, args.timeout, _secret(args))
    if args.rank is None or args.world_size is None:
        return PartyLaunch.from_env(timeout=args.timeout, role=args.role, secret=_secret(args))
    return PartyLaunch(
        args.rank, args.world_size, args.master_addr, args.master_port, args.timeout, args.role,
        _secret(args),
    )  # fmt: skip


def _secret(args: argparse.Namespace) -> bytes | None:
    """The job secret from --job-secret-file or NOPEEK_JOB_SECRET (never from a flag's value:
    a command line is visible to every user of the host)."""
    import os

    from nopeek.errors import ConfigError

    if args.job_secret_file is not None:
        try:
            secret = Path(args.job_secret_file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read --job-secret-file {args.job_secret_file} ({exc.strerror})"
            ) from None
    else:
        secret = os.environ.get("NOPEEK_JOB_SECRET", "").encode().strip()
        if not secret:
            return None
    if len(secret) < 16:
        raise ConfigError(
            "the job secret must have at least 16 characters; make one with e.g. "
            "python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return secret


def run(args: argparse.Namespace) -> int:
    from nopeek.training.trainer import train

    result = train(
        _config(args),
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        quiet=args.quiet,
        launch=make_launch(args),
    )
    m = result.metrics
    if m is None:
        print(f"party done -> {result.run_dir}")
    else:
        keys = ["test_accuracy", "dcor_test", "wire_bytes_total", "payload_bytes_total"]
        from nopeek.cli._fmt import metric

        print("  ".join(metric(k, m[k]) for k in keys if k in m) + f"  -> {result.run_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nopeek.cli.party`` (torchrun): ranks from the environment, same train flags."""
    from nopeek.cli.main import _Parser, run_handler

    parser = _Parser(
        prog="nopeek.cli.party", description=__doc__.splitlines()[0], argument_default=S
    )
    _add_party_args(parser)
    parser.add_argument("-v", "--verbose", action="store_true", default=False)
    args = parser.parse_args(argv)
    args.handler = run
    return run_handler(args)


if __name__ == "__main__":
    sys.exit(main())
