"""MkDocs hook: let mkdocstrings find ``nopeek.attacks``, ``nopeek.defenses`` and ``nopeek.eval``.

The installed package maps top-level folders into ``nopeek`` (``attacks/`` is ``nopeek.attacks``,
see ``ROOTS`` in ``setup.py``). Griffe reads source statically and only looks inside ``nopeek/``,
so before the build this hook lays the installed layout out in a temporary folder of symlinks
(``nopeek/`` with every entry of the core plus one link per mapped folder) and puts that folder
first on the Python handler's search paths. Nothing is imported; the folder is removed at the end.

``DocstringMarkdown`` (a griffe extension, named in ``mkdocs.yml``) renders the docstrings' reST
habits as Markdown: ``>>>`` examples (run by ``tests/test_doctests.py``) become ``pycon`` code
blocks, Sphinx roles such as ``:class:`~nopeek.hooks.CutHook``` become inline code, and the
``::`` that opens a reST literal block becomes ``:`` (the indented block is Markdown code).
"""

from __future__ import annotations

import ast
import re
import shutil
import tempfile
from pathlib import Path

import griffe
from mkdocs.plugins import event_priority

_tree: Path | None = None


def _roots(repo: Path) -> dict[str, str]:
    """``ROOTS`` of ``setup.py`` (installed package name -> folder), read without running it."""
    for node in ast.parse((repo / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "ROOTS" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise RuntimeError("setup.py has no ROOTS mapping: update mkdocs_hooks.py")


@event_priority(100)  # before mkdocstrings' on_config, which creates the Python handler
def on_config(config):
    global _tree
    repo = Path(config.config_file_path).resolve().parent
    _tree = Path(tempfile.mkdtemp(prefix="nopeek-docs-api-"))
    for name, folder in _roots(repo).items():
        parts = name.split(".")
        target = _tree.joinpath(*parts)
        if len(parts) == 1:  # the core: a real folder holding links to its entries
            target.mkdir(parents=True)
            for entry in (repo / folder).iterdir():
                if entry.name != "__pycache__":
                    (target / entry.name).symlink_to(entry)
        else:
            target.symlink_to(repo / folder, target_is_directory=True)
    python = config.plugins["mkdocstrings"].config.handlers.setdefault("python", {})
    python["paths"] = [str(_tree), *python.get("paths", [])]
    return config


def on_shutdown():
    if _tree is not None:  # unlink the links (never follows them), then the folders
        for link in sorted(_tree.rglob("*"), key=lambda p: -len(p.parts)):
            if link.is_symlink():
                link.unlink()
        shutil.rmtree(_tree, ignore_errors=True)


_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`~?([^`]+)`")


def _role(match: re.Match) -> str:
    target = match.group(1)
    short = match.group(0).split("`")[1].startswith("~")
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def _markdown(text: str) -> str:
    """``text`` with every ``>>>`` example (up to the next blank line) fenced, roles as code."""
    out: list[str] = []
    lines = text.splitlines()
    i, fenced = 0, False
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or not line.lstrip().startswith(">>>"):
            if not fenced:  # reST's "text::" before a literal block reads "text:"
                line = _ROLE.sub(_role, line[:-1] if line.endswith("::") else line)
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        out.append(f"{indent}```pycon")
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        out.append(f"{indent}```")
    return "\n".join(out)


class DocstringMarkdown(griffe.Extension):
    """Fence doctest examples and turn Sphinx roles into code, for every loaded docstring."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _markdown(obj.docstring.value)
