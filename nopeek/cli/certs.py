"""``nopeek certs``: a job CA and one certificate per party, for trying the gRPC transport."""

from __future__ import annotations

import argparse

from nopeek.cli.commands import summary


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "certs",
        help=summary("certs"),
        description="Write OUT/ca.pem (give it to every party), OUT/ca.key (keep it off the "
        "parties' hosts) and OUT/<role>.pem + OUT/<role>.key for each role of --parties: each "
        "certificate names its role (CN and DNS SAN), which `nopeek party --transport grpc` "
        "binds the party to. For trying it out: production users bring their own PKI.",
    )
    p.add_argument(
        "--parties", required=True, help="roles, comma-separated, e.g. client,server or "
        "client0,client1,server",
    )  # fmt: skip
    p.add_argument("--out", required=True, help="folder for the PEM files")
    p.add_argument("--days", type=int, default=30, help="validity in days (default 30)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nopeek.runtime.certs import make_certs

    parties = [p.strip() for p in args.parties.split(",") if p.strip()]
    written = make_certs(args.out, parties, days=args.days)
    print(f"wrote {len(written)} files for {', '.join(parties)} -> {args.out}")
    return 0
