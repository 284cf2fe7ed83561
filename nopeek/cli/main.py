"""``nopeek``: entry point. Dispatches to subcommands; user errors exit 2 with one line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from nopeek.errors import NopeekError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) and exits 2."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    from nopeek.cli import models, train

    parser = _Parser(
        prog="nopeek",
        description="Measure and reduce how much raw data leaks through split learning.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in (train, models):
        module.add_parser(sub)
    for name in ("attack", "sweep", "report", "tune", "party", "cost", "infer", "audit", "match"):
        _add_optional(sub, name)
    return parser


def _add_optional(sub, name: str) -> None:
    """Subcommands from the attacks/eval packages register themselves if installed."""
    import importlib

    try:
        module = importlib.import_module(f"nopeek.cli.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"nopeek.cli.{name}":
            raise
        return
    module.add_parser(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 user error)."""
    parser = build_parser()
    return run_handler(parser.parse_args(argv))


def run_handler(args: argparse.Namespace) -> int:
    """Run ``args.handler``: user errors are one line and exit 2 (shared by the torchrun entry
    ``python -m nopeek.cli.party``)."""
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s"
    )
    # Python warnings (mostly from dependencies) go through logging, shown only with --verbose,
    # so that a user error stays one line on stderr.
    logging.captureWarnings(True)
    py_warnings = logging.getLogger("py.warnings")
    py_warnings.setLevel(logging.WARNING if args.verbose else logging.ERROR)
    try:
        return int(args.handler(args) or 0)
    except NopeekError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # the last line of defence: the library turns its write faults into NopeekErrors
        from nopeek.io import describe_os_error

        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "error: interrupted; rerun the same command (train: add --resume) to continue",
            file=sys.stderr,
        )
        return 130
    finally:
        logging.captureWarnings(False)
        py_warnings.setLevel(logging.NOTSET)


if __name__ == "__main__":
    sys.exit(main())
