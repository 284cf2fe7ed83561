"""nopeek.seeding: one table of named random streams; legacy formulas pinned; a source scan.

The packages above the core register their own streams when imported, so this test imports them
first: the table then holds every stream. The scan parses every module of the four packages
(``ast``, not regexes) and fails when a file other than the streams' homes (``nopeek/seeding.py``
and each package's ``streams.py``) derives a seed itself (``SeedSequence``, ``derive_seed``,
literal arithmetic in ``manual_seed`` / ``default_rng`` / ``random_state=``) or names a stream
that the table does not register.
"""

from __future__ import annotations

import ast
import zlib
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch

import nopeek.attacks  # noqa: F401 (registers the attacks' streams)
import nopeek.defenses  # noqa: F401 (registers the defenses' streams)
import nopeek.eval  # noqa: F401 (registers eval's streams)
from nopeek.seeding import STREAMS, derive_seed, generator, numpy_rng, seeded, stream_seed

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("nopeek", "attacks", "defenses", "eval")
# where the streams' formulas live: the core's table, and each package's streams module
HOMES = {Path("nopeek", "seeding.py")} | {Path(pkg, "streams.py") for pkg in PACKAGES[1:]}
HELPERS = {"stream_seed", "generator", "numpy_rng", "seeded"}
SEEDED_CALLS = {"manual_seed", "default_rng"}
# Legacy streams that are the user's seed itself: they coincide by construction (each is drawn
# by a different attack or from a different seed), and changing that would change old numbers.
IDENTITY = {
    "model.init",
    "attack.aux-subset",
    "attack.inverse-network.init",
    "attack.inverse-network.batches",
    "attack.direction.reference",
    "attack.grad-match.clusters",
}


def _index(name: str, shift: int = 0) -> tuple[int | str, ...]:
    """A sample index for stream ``name``: 1, 2, 3, ... (+ ``shift``); strings for domains."""
    return tuple(
        f"digits:noisy{shift}" if key == "domain" else k + 1 + shift
        for k, key in enumerate(STREAMS[name].index)
    )


# --- (1) streams: repeat, and differ by seed, index and name ---------------------------------
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_a_stream_repeats_and_differs_by_seed_and_index(name: str) -> None:
    idx = _index(name)
    assert stream_seed(3, name, *idx) == stream_seed(3, name, *idx)
    assert stream_seed(3, name, *idx) != stream_seed(4, name, *idx)
    for k in range(len(idx)):
        other = idx[:k] + (_index(name, shift=5)[k],) + idx[k + 1 :]
        assert stream_seed(3, name, *idx) != stream_seed(3, name, *other), (name, k)


@pytest.mark.parametrize("seed", [0, 3, 2**31 - 1])
def test_distinct_names_give_distinct_seeds(seed: int) -> None:
    values = {n: stream_seed(seed, n, *_index(n)) for n in STREAMS}
    clashes = [
        (a, b)
        for a, b in combinations(sorted(values), 2)
        if values[a] == values[b] and not {a, b} <= IDENTITY
    ]
    assert clashes == []
    assert {values[n] for n in IDENTITY} == {seed}


def test_new_streams_get_the_default_derivation() -> None:
    """derive_seed = SeedSequence([seed, crc32(tag), *index]), strings hashed with CRC-32."""
    tag = zlib.crc32(b"segment")
    ref = int(np.random.SeedSequence([7, tag, 2]).generate_state(1)[0])
    assert derive_seed(7, "segment", 2) == ref == stream_seed(7, "model.segment", 2)
    domain = zlib.crc32(b"digits:noisy")
    ref = int(np.random.SeedSequence([7, domain, 1]).generate_state(1)[0])
    assert stream_seed(7, "expertmatcher.domain-noise", "digits:noisy", 1) == ref
    assert 0 <= derive_seed(2**31 - 1, "x", 2**40) < 2**32


def test_an_unknown_name_or_wrong_indices_is_refused() -> None:
    with pytest.raises(KeyError, match=r"unknown random stream 'data\.tset'.*known: .*data\.test"):
        stream_seed(0, "data.tset")
    with pytest.raises(TypeError, match=r"'batches' takes the indices \(epoch, client\)"):
        stream_seed(0, "batches", 1)
    with pytest.raises(KeyError, match="unknown random stream"):
        generator(0, "nope")


# --- the helpers agree with stream_seed ------------------------------------------------------
def test_generator_numpy_rng_and_seeded_use_the_stream_seed() -> None:
    value = stream_seed(5, "batches", 2, 1)
    assert generator(5, "batches", 2, 1).initial_seed() == value
    assert generator(5, "data.test", device="cpu").device == torch.device("cpu")
    draws = numpy_rng(5, "leakage-sample").integers(1 << 30, size=4)
    assert draws.tolist() == np.random.default_rng(5 + 1_000_003).integers(1 << 30, size=4).tolist()
    shards = numpy_rng(5, "shards").permutation(10)
    ref = np.random.default_rng(np.random.SeedSequence([5, 0x5A4D])).permutation(10)
    assert shards.tolist() == ref.tolist()

    torch.manual_seed(123)
    before = torch.get_rng_state()
    with seeded(5, "model.segment", 0):
        inside = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG does not move
    ref = torch.rand(3, generator=torch.Generator().manual_seed(stream_seed(5, "model.segment", 0)))
    assert torch.equal(inside, ref)


# --- (3) the legacy formulas: independent references and pinned numbers ---------------------
def _ss32(*entropy: int) -> int:
    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0])


def _ss63(*entropy: int) -> int:
    a, b = np.random.SeedSequence(list(entropy)).generate_state(2, dtype=np.uint32)
    return int(a) << 31 | int(b) >> 1


@pytest.mark.parametrize("seed", [0, 3, 2**31 - 1])
def test_legacy_formulas_match_the_old_code(seed: int) -> None:
    """The formulas the call sites used before the table (copied from the old code)."""
    expected = {
        ("data.test",): _ss32(seed, 1),
        ("data.aux",): _ss32(seed, 2),
        ("data.max-train",): _ss32(seed, 3),
        ("data.shuffle-labels",): _ss32(seed, 4),
        ("model.init",): seed,
        ("batches", 4, 2): seed * 100_003 + 4 + 7_919 * 2,
        ("leakage-sample",): seed + 1_000_003,
        ("attack.fsha.draws",): _ss32(seed, 0xF5A, 1),
        ("attack.fsha.nets",): _ss32(seed, 0xF5A, 2),
        ("attack.fresh-segments", 1): _ss32(seed, 0x5EED, 1),
        ("attack.grad-match.clone",): seed * 7919 + 104729,
        ("defense.noise", 1, 0, 1): _ss63(seed, 1 * 16 + 1),  # cut noise, inference stream
        ("defense.noise", 2, 1, 0): _ss63(seed, 2 * 16 + 4096),  # dp-sgd at party 1
        ("defense.decoder", 7, 0): _ss63(seed, 7 * 16),  # adversarial
        ("defense.attacker-queries",): _ss63(seed, 0x0A77AC),
        ("expertmatcher.init", 2): _ss32(seed, zlib.crc32(b"expertmatcher-init"), 2),
    }
    for (name, *idx), value in expected.items():
        assert stream_seed(seed, name, *idx) == value, name


def test_legacy_values_are_pinned() -> None:
    """A few numbers from the releases before the table, pinned: same seed, same numbers."""
    assert [stream_seed(3, n) for n in ("data.test", "data.aux", "data.max-train")] == [
        457190280,
        960329833,
        4253259675,
    ]
    assert stream_seed(0, "data.test") == 3964924996
    assert stream_seed(3, "model.segment", 1) == 2995412061
    assert stream_seed(3, "attack.fsha.nets") == 576160367
    assert stream_seed(3, "attack.fresh-segments", 1) == 493217761
    assert stream_seed(3, "defense.noise", 1, 0, 1) == 6045708370128784724
    assert stream_seed(0, "defense.attacker-queries") == 3316558991852506331
    assert stream_seed(3, "expertmatcher.domain-noise", "digits:noisy", 2) == 3172395683
    assert numpy_rng(3, "shards").integers(1000, size=3).tolist() == [719, 421, 261]


# --- (2) the source scan ---------------------------------------------------------------------
def _literal_arithmetic(node: ast.AST) -> bool:
    """An int literal, or an expression (arithmetic, list, tuple) that contains one."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, int) and not isinstance(node.value, bool)
    if isinstance(node, ast.BinOp | ast.UnaryOp | ast.List | ast.Tuple):
        return any(_literal_arithmetic(child) for child in ast.iter_child_nodes(node))
    return False


def _called(node: ast.Call) -> str | None:
    func = node.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)


def _helpers_imported(tree: ast.Module) -> dict[str, str]:
    """Local name -> helper for ``from nopeek.seeding import ...`` (and ``as`` aliases)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "nopeek.seeding":
            names |= {a.asname or a.name: a.name for a in node.names if a.name in HELPERS}
    return names


def scan(source: str, where: str) -> tuple[list[str], set[str]]:
    """(problems, stream names used) of one module's source."""
    tree = ast.parse(source)
    helpers = _helpers_imported(tree)
    problems, used = [], set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name, line = _called(node), f"{where}:{node.lineno}"
        if name in ("SeedSequence", "derive_seed"):
            problems.append(f"{line} calls {name}: ask nopeek.seeding for a named stream")
        if name in SEEDED_CALLS and any(_literal_arithmetic(a) for a in node.args):
            problems.append(f"{line} derives a seed in {name}(): register a stream")
        for kw in node.keywords:
            if kw.arg == "random_state" and _literal_arithmetic(kw.value):
                problems.append(f"{line} derives a seed in random_state=: register a stream")
        is_helper = isinstance(node.func, ast.Name) and node.func.id in helpers
        is_helper |= (
            isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "seeding"
            and node.func.attr in HELPERS
        )
        if is_helper and len(node.args) >= 2:
            arg = node.args[1]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                used.add(arg.value)
                if arg.value not in STREAMS:
                    problems.append(f"{line} draws from unregistered stream {arg.value!r}")
            else:
                problems.append(f"{line} names its stream with a non-literal: use a literal")
    return problems, used


def _modules() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    return [p for p in files if p.relative_to(ROOT) not in HOMES]


def test_scan_catches_each_kind_of_ad_hoc_seed() -> None:
    bad = """
from nopeek.seeding import stream_seed as ss, generator
import numpy as np, torch
np.random.SeedSequence([seed, 5])
derive_seed(seed, "x")
torch.Generator().manual_seed(seed * 100_003 + epoch)
torch.manual_seed(-seed + 1)
np.random.default_rng([seed, 0x5A4D])
KMeans(random_state=seed + 1)
ss(seed, "no-such-stream")
generator(seed, name)
"""
    problems, used = scan(bad, "bad.py")
    assert [p.split()[1:3] for p in problems] == [
        ["calls", "SeedSequence:"],
        ["calls", "derive_seed:"],
        ["derives", "a"],
        ["derives", "a"],
        ["derives", "a"],
        ["derives", "a"],
        ["draws", "from"],
        ["names", "its"],
    ]
    good = """
from nopeek.seeding import generator, stream_seed
torch.Generator().manual_seed(seed)
np.random.default_rng(stream_seed(seed, "shards"))
KMeans(random_state=stream_seed(seed, "attack.grad-match.clusters"))
self.generator("noise")  # a defense's own method, not the helper
gen = generator(seed, "batches", epoch, client)
"""
    assert scan(good, "good.py") == ([], {"shards", "attack.grad-match.clusters", "batches"})


def test_no_module_derives_a_seed_outside_nopeek_seeding() -> None:
    problems, used = [], set()
    for path in _modules():
        found, names = scan(path.read_text(), str(path.relative_to(ROOT)))
        problems += found
        used |= names
    assert problems == []
    assert sorted(set(STREAMS) - used) == []  # every registered stream has a call site
