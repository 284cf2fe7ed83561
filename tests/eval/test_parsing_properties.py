"""Property tests (hypothesis) for the CLI's value parsers.

Two kinds of properties: round trips (formatting values and parsing them gives them back) and
robustness (any text either parses or raises a one-line ``ConfigError``, never another exception,
which the CLI would show as a traceback). Texts are drawn both fully at random and from a
grammar of near-valid specs, so the deeper checks (option kinds, defense combinations) are hit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nopeek.defenses import DEFENSES, parse_defenses, parse_spec
from nopeek.errors import ConfigError
from nopeek.eval.settings import (
    parse_attack,
    parse_attacks,
    parse_defense_option,
    parse_floats,
    parse_ints,
)

FAST = settings(max_examples=60, deadline=None)

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
words = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789_-"), min_size=1, max_size=8)
names = words.filter(lambda w: w[0].isalpha() and w != "none")
values = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    finite_floats.map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "true", "false", "yes", "", " ", "0", "-1"]),
    st.sampled_from(["gaussian", "laplace", "uniform", "max-norm", "marvell", "conv1", "1e+1"]),
    st.text(max_size=6),
)
# Keys: every declared option of every defense, plus noise.
keys = st.one_of(
    st.sampled_from(sorted({k for n in DEFENSES.names() for k in DEFENSES.get(n).options})),
    st.sampled_from(["target-epsilon", "scale", ""]),
    words,
)


@st.composite
def near_valid_spec(draw: st.DrawFn) -> str:
    """``name[:item,...]`` with a registered (or random) name and random keys/values."""
    name = draw(st.one_of(st.sampled_from(DEFENSES.names()), names, st.just("")))
    items = draw(
        st.lists(
            st.one_of(st.tuples(keys, values).map("=".join), values),  # key=value or bare
            max_size=4,
        )
    )
    return name + (":" + ",".join(items) if items or draw(st.booleans()) else "")


def _option_value(kind: str) -> st.SearchStrategy[str]:
    """Text for an option of a declared kind, mostly valid for it."""
    if kind == "float":
        good = st.floats(1e-6, 1e6).map(repr)
        return st.one_of(good, good, st.sampled_from(["0", "-1", "nan", "1e-5", "0.999"]))
    if kind == "bool":
        return st.sampled_from(["true", "false", "yes", "no", "1", "0", "TRUE", "maybe"])
    if "|" in kind:
        return st.sampled_from([*kind.split("|"), "other"])
    return words


@st.composite
def defense_spec(draw: st.DrawFn) -> str:
    """A registered defense with some of its declared options, values mostly of the right kind."""
    name = draw(st.sampled_from(DEFENSES.names()))
    options = DEFENSES.get(name).options
    if not options:
        return name
    chosen = draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=3))
    items = [f"{k}={draw(_option_value(options[k]))}" for k in chosen]
    return name + (":" + ",".join(items) if items else "")


def _parses_or_config_error(parse: Callable[[], Any]) -> Any:
    """Run ``parse``; a ConfigError must be one line, any other exception fails the test."""
    try:
        return parse()
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).strip()
        return None


# ------------------------------------------------------------------- numbers: --alpha, --seeds


@FAST
@given(st.lists(finite_floats, min_size=1, max_size=6), st.sampled_from([",", ", ", " ,"]))
def test_parse_floats_round_trip(numbers: list[float], sep: str) -> None:
    assert parse_floats(sep.join(map(repr, numbers)), what="--alpha") == numbers


@FAST
@given(st.lists(st.integers(), min_size=1, max_size=6, unique=True))
def test_parse_ints_round_trip(numbers: list[int]) -> None:
    assert parse_ints(",".join(map(str, numbers)), what="--seeds") == numbers


@FAST
@given(st.text(max_size=30))
@example("nan")
@example("0,inf")
@example("1e999")
@example(",,")
@example("1_0")
def test_parse_floats_gives_finite_numbers_or_config_error(text: str) -> None:
    parsed = _parses_or_config_error(lambda: parse_floats(text, what="--alpha"))
    if parsed is not None:
        assert parsed and all(isinstance(v, float) and math.isfinite(v) for v in parsed)


@pytest.mark.parametrize("text", ["nan", "0,inf", "0.5,-1e999"])
def test_parse_floats_refuses_non_finite_naming_the_flag(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--alpha takes finite numbers"):
        parse_floats(text, what="--alpha")


@FAST
@given(st.text(max_size=30))
@example("1,1")
@example("1.5")
@example("9" * 5000)  # over Python's int-digits limit: a ValueError, not a ConfigError
def test_parse_ints_gives_distinct_ints_or_config_error(text: str) -> None:
    parsed = _parses_or_config_error(lambda: parse_ints(text, what="--seeds"))
    if parsed is not None:
        assert parsed and len(set(parsed)) == len(parsed)
        assert all(isinstance(v, int) for v in parsed)


# ----------------------------------------------------------------------------- --attack


option_values = st.one_of(
    st.integers(-(10**30), 10**30),
    finite_floats,
    st.booleans(),
    st.text(st.sampled_from("abcxyz_-"), min_size=1, max_size=6).filter(
        lambda s: s.lower() not in ("true", "false")
    ),
)


def _format_option(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value).strip("'")


@FAST
@given(
    names,
    st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), option_values),
)
def test_parse_attack_round_trip(name: str, options: dict[str, Any]) -> None:
    spec = name + (":" if options else "")
    spec += ",".join(f"{k}={_format_option(v)}" for k, v in options.items())
    got_name, got = parse_attack(spec)
    assert got_name == name
    assert got == options
    assert [type(v) for v in got.values()] == [type(v) for v in options.values()]


@FAST
@given(st.lists(st.tuples(names, st.lists(st.tuples(words, words), max_size=3)), max_size=4))
def test_parse_attacks_round_trip(attacks: list[tuple[str, list[tuple[str, str]]]]) -> None:
    specs = [
        n + (":" if opts else "") + ",".join(f"{k}={v}" for k, v in opts) for n, opts in attacks
    ]
    assert parse_attacks(",".join(specs)) == specs
    assert parse_attacks(specs + ["none"]) == specs


@FAST
@given(st.text(max_size=40))
@example("=1")
@example("x:=")
@example("x:a")
@example("steps=3,white-box")
def test_attack_parsers_never_raise_anything_but_config_error(text: str) -> None:
    _parses_or_config_error(lambda: parse_attack(text))
    specs = _parses_or_config_error(lambda: parse_attacks(text))
    for spec in specs or []:
        _parses_or_config_error(lambda spec=spec: parse_attack(spec))


# ---------------------------------------------------------------------------- --defense


@FAST
@given(st.lists(near_valid_spec().filter(lambda s: "+" not in s and s.strip()), max_size=3))
def test_parse_defense_option_round_trip(specs: list[str]) -> None:
    specs = [s.strip() for s in specs if s.strip() and s.strip().lower() != "none"]
    text = "+".join(specs) or "none"
    assert parse_defense_option(text) == tuple(specs)


@FAST
@given(
    st.one_of(
        st.text(max_size=40),
        near_valid_spec(),
        st.lists(defense_spec(), min_size=1, max_size=3).map("+".join),
    ),
    st.sampled_from([None, 2, 10]),
    st.sampled_from([0.0, 0.5]),
    st.sampled_from([None, 1e-5]),
)
@example("cut-noise:gaussian,sigma=nan", None, 0.0, None)
@example("dp-sgd:epsilon=8,delta=1", None, 0.0, None)
@example("isotropic:match=marvell,s=1", 10, 0.0, None)
@example("cut-noise::", None, 0.0, None)
def test_defense_parsers_never_raise_anything_but_config_error(
    text: str, n_classes: int | None, alpha: float, delta: float | None
) -> None:
    """parse_defense_option -> parse_spec -> parse_defenses, as ``--defense`` is consumed."""
    specs = _parses_or_config_error(lambda: parse_defense_option(text))
    for spec in specs or []:
        _parses_or_config_error(lambda spec=spec: parse_spec(spec))
    if specs:
        kw = {"n_classes": n_classes, "alpha": alpha, "delta": delta}
        _parses_or_config_error(lambda: parse_defenses(list(specs), **kw))


@FAST
@given(st.one_of(defense_spec(), near_valid_spec()))
def test_canonical_defense_spec_round_trips(spec: str) -> None:
    """A spec that builds a defense -> its canonical ``spec()`` builds the same defense again."""
    hooks = _parses_or_config_error(lambda: parse_defenses([spec]))
    if hooks:
        canonical = hooks[0].spec()
        again = parse_defenses([canonical])[0]
        assert again.spec() == canonical
        before, after = hooks[0].params(), again.params()
        assert before.keys() == after.keys()
        for key, value in before.items():  # spec() writes floats with 6 significant digits
            if isinstance(value, float):
                assert after[key] == pytest.approx(value, rel=1e-5)
            else:
                assert after[key] == value
