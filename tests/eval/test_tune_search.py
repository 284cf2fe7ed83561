"""The tune search on a synthetic, monotone trade-off: finds the budget's edge, or says none."""

import math
from types import SimpleNamespace

import pytest

from nopeek.eval.settings import Setting
from nopeek.eval.tune import Knob, combine, search

ALPHA = Knob("alpha", "alpha", 4.0)
NOISE = Knob("noise", "noise:sigma={}", 2.0)


def _sigma(setting: Setting) -> float:
    return sum(float(d.split("=")[1]) for d in setting.defenses)


def _model(setting: Setting):
    """Leakage falls and accuracy falls with alpha and sigma (noise costs more accuracy)."""
    a, s = setting.alpha, _sigma(setting)
    leak = 0.8 * math.exp(-a - 2 * s)
    acc = 0.97 - 0.02 * a - 0.06 * s
    return SimpleNamespace(accuracy=SimpleNamespace(mean=acc), leak=leak)


def _run(knobs, budget, iterations=4):
    calls = []

    def evaluate(settings):
        calls.append(list(settings))
        return {s: _model(s) for s in settings}

    result = search(knobs, evaluate, lambda r: r.leak < budget, iterations=iterations)
    return result, calls


def test_bisection_finds_the_weakest_passing_alpha():
    result, calls = _run([ALPHA], 0.3)
    edge = math.log(0.8 / 0.3)  # leakage < 0.3 for alpha > 0.98
    best = result.knob_best["alpha"]
    assert edge < best <= edge + 4.0 / 2**4
    assert result.best.leak < 0.3
    # the answer is the most accurate passing candidate, and passes
    passing = [v for s, v, ok in result.candidates() if ok]
    assert result.best.accuracy.mean == max(v.accuracy.mean for v in passing)
    # undefended, hi, then one midpoint per round
    assert [len(c) for c in calls] == [1, 1, 1, 1, 1, 1]


def test_combination_and_lockstep_rounds():
    result, calls = _run([ALPHA, NOISE], 0.3)
    assert len(calls[1]) == 2  # both knobs' strongest values in one round (parallelisable)
    assert result.best.leak < 0.3
    # noise costs 3x more accuracy per unit of log-leakage than alpha here: alpha wins
    assert result.best.accuracy.mean >= max(
        v.accuracy.mean for s, v, ok in result.candidates() if ok and not s.alpha
    )
    assert any(s.alpha and s.defenses for s in result.evaluated)  # combined settings tried


def test_undefended_within_budget_is_the_answer():
    result, calls = _run([ALPHA, NOISE], 0.9)
    assert result.best is result.evaluated[Setting()]
    assert calls == [[Setting()]]


def test_no_setting_meets_an_impossible_budget():
    result, _ = _run([ALPHA, NOISE], 1e-9)
    assert result.best is None
    assert result.knob_best == {"alpha": None, "noise": None}
    assert not any(result.passing.values())


def test_combine_builds_one_setting():
    s = combine([(ALPHA, 0.5), (NOISE, 0.0), (Knob("n2", "n2:{}", 1.0), 0.25)])
    assert s == Setting(0.5, ("n2:0.25",))


def test_negative_iterations_refused():
    from nopeek.errors import ConfigError

    with pytest.raises(ConfigError, match="iterations"):
        search([ALPHA], lambda s: {}, lambda r: True, iterations=-1)
