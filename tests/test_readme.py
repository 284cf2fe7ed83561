"""The README's Python example runs (with fewer epochs) and its CLI commands parse."""

import re
import shlex
from pathlib import Path

import pytest

from nopeek.cli.main import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (code,) = _blocks("python")
    exec(compile(code.replace("epochs=30", "epochs=2"), "README.md", "exec"), {})
    assert (tmp_path / "runs" / "noped" / "metrics.json").exists()


def _commands() -> list[str]:
    """``nopeek ...`` lines of the bash blocks, continuation lines joined, comments dropped."""
    lines = "\n".join(_blocks("bash")).replace("\\\n", " ").splitlines()
    return [line.split(" #")[0].strip() for line in lines if line.startswith("nopeek ")]


@pytest.mark.parametrize("line", _commands())
def test_cli_examples_parse(line):
    parser = build_parser()
    argv = shlex.split(line)[1:]
    if argv[0] not in parser._subparsers._group_actions[0].choices:
        pytest.fail(f"README shows a subcommand that does not exist: {line}")
    parser.parse_args(argv)
