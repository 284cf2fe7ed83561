"""``nopeek align``: align the samples of the parties' own files by private set intersection.

Each party runs it on its own host with its own file and the launch flags of ``nopeek party``
(``--rank``/``--world-size``/``--master-port``, or ``--transport grpc``): the label party serves
the PSI, every other party with data asks (see :mod:`nopeek.runtime.align`). Each writes what it
learned to ``OUT/<party>/alignment.json``: its own row count and those of the others it
learned, how many of its rows the label party holds, the size of the aligned set and (a party
with data) the aligned ids in the aligned order. ``nopeek party`` runs the same alignment first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nopeek.cli.commands import summary
from nopeek.cli.party import add_labels_arg, add_launch_args, make_launch, own_source
from nopeek.config import TrainConfig

S = argparse.SUPPRESS
_LAUNCH = {"role", "rank", "world_size", "master_addr", "master_port", "timeout", "transport"}
_LAUNCH |= {"peers", "ca", "cert", "key", "job_secret_file"}
_RUN = {"out", "overwrite", "handler", "command", "verbose"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "align",
        help=summary("align"),
        description=__doc__.splitlines()[0],
        argument_default=S,
    )
    p.add_argument("--dataset", help="this party's own features, csv:PATH (if it holds any)")
    add_labels_arg(p)
    p.add_argument("--target", help="the label column of --labels")
    p.add_argument("--id-column", dest="id_column", required=True, help="the column of sample ids")
    p.add_argument("--columns", help="the feature columns of --dataset, comma-separated")
    p.add_argument("--topology", help="vanilla | vertical (default vanilla)")
    p.add_argument("--clients", type=int, help="vertical: number of clients (default 2)")
    p.add_argument(
        "--label-party", dest="label_party", help="vertical: who holds the labels (server)"
    )
    add_launch_args(p)
    p.add_argument("--out", default="runs/alignment", help="folder; writes OUT/<party>/")
    p.add_argument(
        "--overwrite", action="store_true", default=False, help="replace an alignment.json"
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nopeek.errors import OutputError
    from nopeek.io import atomic_write_json
    from nopeek.runtime.align import align_files

    fields = {k: v for k, v in vars(args).items() if k not in _LAUNCH | _RUN}
    config = own_source(TrainConfig(**fields), args)
    done = align_files(config, make_launch(args))
    path = Path(args.out) / done.party / "alignment.json"
    if path.exists() and not args.overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it")
    atomic_write_json(path, done.to_json())
    own = done.rows.get(done.party)
    held = f" of its {own}" if own is not None else ""
    print(f"{done.party}: {done.size} aligned samples{held} -> {path}")
    return 0
