"""The table of ``nopeek`` subcommands: name -> (module, one-line summary).

The top-level parser is built from this table alone, so ``nopeek --help`` imports no torch; a
subcommand's module (and with it torch, the models and the data sets) is imported only when that
subcommand runs.

>>> COMMANDS["train"].module
'nopeek.cli.train'
"""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    """Where a subcommand lives and what ``nopeek --help`` says of it."""

    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    "train": Command("nopeek.cli.train", "train a split model and measure leakage at the cut"),
    "models": Command("nopeek.cli.models", "list models and their cut names"),
    "attack": Command(
        "nopeek.cli.attack",
        "attack a finished run (reconstruct inputs or infer labels from the cut)",
    ),
    "sweep": Command(
        "nopeek.cli.sweep", "train and attack one run per setting x seed; write results.csv"
    ),
    "benchmark": Command(
        "nopeek.cli.benchmark",
        "attack x defense grid over configurations and data sets; one table and heat map",
    ),
    "report": Command(
        "nopeek.cli.report",
        "write report.md/.html: frontier, curves, reconstructions, report card",
    ),
    "tune": Command(
        "nopeek.cli.tune", "find the most accurate defense setting within a leakage budget"
    ),
    "party": Command(
        "nopeek.cli.party", "run one party of a distributed run (torch.distributed or gRPC + TLS)"
    ),
    "align": Command(
        "nopeek.cli.align",
        "align the samples of the parties' own files by private set intersection (PSI)",
    ),
    "certs": Command(
        "nopeek.cli.certs", "make a job CA and one certificate per party (gRPC + mutual TLS)"
    ),
    "cost": Command(
        "nopeek.cli.cost",
        "split vs federated learning: client TFLOPs and GB per epoch (formulas, measured)",
    ),
    "infer": Command(
        "nopeek.cli.infer", "predict with a trained run through the channel (split inference)"
    ),
    "audit": Command(
        "nopeek.cli.audit",
        "audit your own exported client segment (what do its activations reveal?)",
    ),
    "match": Command(
        "nopeek.cli.match",
        "ExpertMatcher: match a client's hidden representations to a server-side expert",
    ),
}


def summary(name: str) -> str:
    """The one-line help of subcommand ``name`` (each module's ``add_parser`` uses it)."""
    return COMMANDS[name].summary
