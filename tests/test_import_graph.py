"""The core's import graph: no circle, a layer order it keeps, and a top level one can read.

The scan walks the syntax tree of every module of ``nopeek/`` (the CLI included; attacks,
defenses and eval are ``tests/test_layers.py``'s), function-level imports included.
``from nopeek import X`` counts as importing ``nopeek.X``, and ``from nopeek.x import Name`` as
importing ``nopeek.x``.

``if TYPE_CHECKING:`` imports count for circles: a circle that only type checkers follow is
still two modules that cannot be understood one without the other (and one step from a real
circle when an annotation becomes a runtime import), so there is none at all. They do not
count for the layer order: they never run, and an annotation may name a type of a higher layer
as long as it closes no circle.

The package ``nopeek`` itself is no node: its ``__init__`` imports nothing of the core when it
runs (each public name is imported on first use, PEP 562), and its ``TYPE_CHECKING`` block only
re-exports the public API for type checkers; with it as a node, the one import of the package
(``from nopeek import __version__``) would close a circle through every module it re-exports.
``nopeek.runtime``, lazy in the same way, stays a node: no module its ``TYPE_CHECKING`` block
names imports the package back, and the scan would show it if one did.

The layer order below (lowest first) is what the tree keeps: a module may import its own unit
(``nopeek.data.user`` -> ``nopeek.data.splits``) and any unit of a lower or the same layer. Why
each sits where it does:

- ``base``: what everything shares and that imports nothing of nopeek's but each other: errors,
  schemas, seeds, atomic files, the entry-point loader and the name registry, distance
  correlation, the hook interface;
- ``runtime.channel``: the channel interface, its message records and the wire log (the
  observer and the compressors read them, so they sit below the rest of the runtime;
  ``nopeek.runtime`` imports its members lazily, so importing it runs no party code);
- ``data`` (splits, registered sets and formats, user files, party data) needs only the base;
- ``models`` (reference models, torch.fx split) and ``topology`` (the party graph, built from
  split models) come next;
- the pieces a party runs: compressors, regularizers, what the attacker observes;
- ``runtime`` (parties, channels, launch, the alignment of the parties' own files);
- ``config`` (it resolves defaults from data, models and topology and validates against their
  registries) and ``runtime.plans``, the epoch plans (they drive a runtime);
- ``rundir`` (it reads a run's config back), ``training`` (assemble, run, restore, measure and
  log a run), ``inference`` (serve a trained run), then ``cli``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "nopeek"
LAYERS: list[set[str]] = [
    {
        "errors",
        "schema",
        "seeding",
        "io",
        "plugins",
        "registry",
        "distance",
        "hooks",
        "workers",
        "_preload",
    },
    {"runtime.channel"},
    {"data"},
    {"models"},
    {"topology"},
    {"compress", "regularizers", "observe"},
    {"runtime"},
    {"config", "runtime.plans"},
    {"rundir"},
    {"training"},
    {"inference"},
    {"cli"},
]
SUBUNITS = {"runtime.channel", "runtime.plans"}
"""Modules of a package placed on their own layer: the channel's message records sit below the
data (the observer and the compressors read them), the epoch plans above the config."""
MAX_UPWARD = 2  # imports against the order that may stand (each with a reason)
MAX_TOP_LEVEL = 25  # nopeek/*.py (not __init__) and nopeek/*/ packages


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(CORE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """The ids of the nodes inside ``if TYPE_CHECKING:`` blocks of ``tree``."""
    return {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and _type_checking(block)
        for stmt in block.body
        for n in ast.walk(stmt)
    }


def _imports(module: str, path: Path, *, type_checking: bool) -> list[tuple[int, str]]:
    """``(line, imported name)`` of every import in ``path``; those in ``TYPE_CHECKING`` blocks
    only with ``type_checking``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    skipped = set() if type_checking else _type_checking_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return found


def graph(*, type_checking: bool = False) -> dict[str, dict[str, int]]:
    """Module -> {imported nopeek module: first line}; ``TYPE_CHECKING`` imports included with
    ``type_checking``. The package ``nopeek`` is no node (see the module's docstring)."""
    known = {m: p for m, p in _modules().items() if m != "nopeek"}
    out: dict[str, dict[str, int]] = {m: {} for m in known}
    for module, path in known.items():
        for line, name in _imports(module, path, type_checking=type_checking):
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name not in ("nopeek", module):
                out[module].setdefault(name, line)
    return out


def find_cycle(edges: dict[str, dict[str, int]]) -> list[str]:
    """One import circle ``[a, b, ..., a]``, or ``[]``."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return []

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return []


def unit(module: str) -> str:
    """``nopeek.data.user`` -> ``data``; ``nopeek.runtime.channel`` -> ``runtime.channel``."""
    parts = module.split(".")
    sub = ".".join(parts[1:3])
    return sub if sub in SUBUNITS else parts[1]


def level(module: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit(module) in layer)


def upward(edges: dict[str, dict[str, int]]) -> list[str]:
    return sorted(
        f"{_modules()[m].relative_to(ROOT)}:{line} imports {t}"
        for m, targets in edges.items()
        for t, line in targets.items()
        if unit(m) != unit(t) and level(t) > level(m)
    )


def top_level() -> list[str]:
    return sorted(
        p.name
        for p in CORE.iterdir()
        if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file()
    )


def test_the_scan_resolves_imports_and_counts_type_checking_ones_on_request():
    edges, typed = graph(), graph(type_checking=True)
    assert "nopeek.data.splits" in edges["nopeek.data.user"]
    assert "nopeek.models" in edges["nopeek.topology.basic"]
    # nopeek.runtime imports its members on first use; its TYPE_CHECKING block names them
    assert "nopeek.runtime.party" not in edges["nopeek.runtime"]
    assert "nopeek.runtime.party" in typed["nopeek.runtime"]
    assert "nopeek" not in typed  # the package is no node
    assert "nopeek.config" not in typed["nopeek.plugins"]  # a Protocol, not the config's types
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}}) == []


def test_no_import_circle_in_the_core_type_checking_included():
    cycle = find_cycle(graph(type_checking=True))
    assert not cycle, "import circle: " + " -> ".join(cycle)


def test_every_top_level_unit_has_a_layer():
    units = {unit(m) for m in graph()}
    declared = set().union(*LAYERS)
    assert units - declared == set(), "declare the layer of each new module in LAYERS"
    assert declared - units == set(), "LAYERS names modules that are gone"


def test_the_core_keeps_its_layer_order():
    found = upward(graph())
    assert len(found) <= MAX_UPWARD, "imports against the layer order:\n" + "\n".join(found)


def test_the_top_level_stays_readable():
    names = top_level()
    assert len(names) <= MAX_TOP_LEVEL, f"{len(names)} modules and packages: {names}"
