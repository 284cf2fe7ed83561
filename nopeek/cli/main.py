"""``nopeek``: entry point. Dispatches to subcommands; user errors exit 2 with one line."""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from nopeek.cli.commands import COMMANDS
from nopeek.errors import NopeekError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) and exits 2."""

    def error(self, message: str) -> NoReturn:  # noqa: D102 - argparse API
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``nopeek`` parser. With ``only``, just that subcommand's module is imported (and its
    full parser built); the others are listed by name and summary alone, so that ``nopeek
    --help`` imports no torch.

    >>> build_parser(only="models").parse_args(["models"]).command
    'models'
    """
    from nopeek import __version__

    parser = _Parser(
        prog="nopeek",
        description="Measure and reduce how much raw data leaks through split learning.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--version", action="version", version=f"nopeek {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, command in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(command.module).add_parser(sub)
        else:
            sub.add_parser(name, help=command.summary)
    return parser


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not a top-level flag)."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 user error).

    Called as the command (``argv`` None), it freezes the garbage collector's objects before
    returning: the process ends next, and the interpreter's last collection pass over torch's
    and matplotlib's objects took 0.6 s of a command's exit (nothing of nopeek's waits for
    it: every file is written, and closed, before the command returns).
    """
    command = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=_chosen_command(argv) or "")
    status = run_handler(parser.parse_args(argv))
    if command:
        gc.freeze()
    return status


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
