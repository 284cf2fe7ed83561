"""The README and the documentation site (``docs/``) say only what works.

- every Python example (a ``python`` block) runs, with fewer epochs;
- every shell command of a ``bash`` block parses: ``nopeek ...`` with the CLI's own parser,
  ``torchrun ... -m nopeek.cli.party ...`` with the party's, ``make T`` names a Makefile target,
  ``python -c CODE`` compiles, a script or ``-m`` module exists; any other program fails the test
  until it is taught here;
- the README stays short, and every page of ``docs/`` is in the ``mkdocs.yml`` nav.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

import nopeek.cli.main as cli_main
from nopeek.cli import party
from nopeek.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
README_MAX_LINES = 220


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def _python_examples() -> list[tuple[str, str]]:
    return [(_name(p), code) for p in PAGES for code in _blocks(p, "python")]


def _shell_commands() -> list[tuple[str, str]]:
    """(page, command) for every command of every bash block: continuation lines joined,
    comments and blank lines dropped."""
    out = []
    for path in PAGES:
        for block in _blocks(path, "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                if line and not line.startswith("#"):
                    out.append((_name(path), line))
    return out


def test_there_is_something_to_check():
    assert _python_examples(), "no python example in README.md or docs/"
    assert any(line.startswith("nopeek ") for _, line in _shell_commands())


@pytest.mark.parametrize(("page", "code"), _python_examples(), ids=lambda v: v[:40])
def test_python_examples_run(page, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(re.sub(r"epochs=\d+", "epochs=2", code), page, "exec"), {})


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {t for line in re.findall(r"^([\w .-]+):(?!=)", text, flags=re.M) for t in line.split()}


def _check_nopeek(argv: list[str], line: str) -> None:
    parser = build_parser()
    if argv[0] not in parser._subparsers._group_actions[0].choices:
        pytest.fail(f"the docs show a subcommand that does not exist: {line}")
    parser.parse_args(argv)


def _check_party_module(argv: list[str], monkeypatch) -> None:
    """``python -m nopeek.cli.party ARGS`` (what torchrun starts): parse ARGS, run nothing."""
    monkeypatch.setattr(cli_main, "run_handler", lambda args: 0)
    assert party.main(argv) == 0


def _check_python(argv: list[str], line: str, monkeypatch) -> None:
    if argv[:1] == ["-c"]:
        compile(argv[1], line, "exec")
    elif argv[:1] == ["-m"]:
        if argv[1] == "nopeek.cli.party":
            _check_party_module(argv[2:], monkeypatch)
        else:
            assert importlib.util.find_spec(argv[1]), f"no module {argv[1]}: {line}"
    else:
        assert (ROOT / argv[0]).is_file(), f"no script {argv[0]}: {line}"


@pytest.mark.parametrize(("page", "line"), _shell_commands(), ids=lambda v: v[:60])
def test_shell_commands_parse(page, line, monkeypatch):
    words = shlex.split(line)
    while re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value prefixes
        words = words[1:]
    program, argv = Path(words[0]).name, words[1:]
    if program == "nopeek":
        _check_nopeek(argv, line)
    elif program == "torchrun":
        assert "-m" in argv, line
        module = argv.index("-m")
        assert argv[module + 1] == "nopeek.cli.party", line
        _check_party_module(argv[module + 2 :], monkeypatch)
    elif program in ("python", "python3"):
        _check_python(argv, line, monkeypatch)
    elif program == "make":
        assert set(argv) <= _make_targets(), f"{page}: no such make target: {line}"
    elif program == "pip":
        assert argv[0] == "install", line
        extras = re.findall(r"\[([\w,-]+)\]", line)
        declared = re.search(
            r"\[project\.optional-dependencies\](.*?)^\[", (ROOT / "pyproject.toml").read_text(),
            flags=re.S | re.M,
        )  # fmt: skip
        for extra in ",".join(extras).split(",") if extras else []:
            assert re.search(rf"^{extra} = ", declared.group(1), flags=re.M), line
    else:
        pytest.fail(f"{page}: teach tests/test_readme.py to check `{program}`: {line}")


def test_readme_stays_short():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move details to docs/"
    )


def _nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for v in nav.values() for p in _nav_pages(v)]
    return [p for item in nav for p in _nav_pages(item)]


def test_every_docs_page_is_in_the_nav():
    yaml = pytest.importorskip("yaml")  # comes with mkdocs (the dev extras)
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = _nav_pages(config["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(set(pages) - set(nav)) == [], "pages missing from the mkdocs.yml nav"
    assert sorted(set(nav) - set(pages)) == [], "the nav names pages that do not exist"
