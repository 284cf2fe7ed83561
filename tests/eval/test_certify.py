"""tune certifies only what holds under the full search (issue 22): margins, fall-back, refusal.

The fall-back order is tested with a fake searcher (no runs); the end-to-end case trains one
tiny digits run whose screening attack is too weak to see the leak that the searched attacker
finds.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from nopeek.cli.main import main
from nopeek.eval.certify import certify, certify_best
from nopeek.eval.settings import Setting
from nopeek.eval.tune import Budget, TuneResult

WEAK, STRONG, BEST = Setting(1.0), Setting(4.0), Setting(0.5)


def _searcher(leaks: dict[str, float], calls: list):
    """A searcher whose worst leak on a run depends on the setting in the run's path."""

    def search(run: Path, name: str, party, seed: int):
        calls.append((run.name, name, seed))
        leak = leaks[run.name.split("-seed")[0]] + 0.01 * seed
        member = SimpleNamespace(result=SimpleNamespace(ssim=0.3 + leak, auc_folded_max=None))
        worst = SimpleNamespace(config={"width": 64}, seed=seed, steps=1000)
        return SimpleNamespace(leak=leak, members=[member], worst=worst, attack=name, path=None)

    return search


def _result(settings) -> TuneResult:
    evaluated = {
        s: SimpleNamespace(accuracy=SimpleNamespace(mean=acc), setting=s.slug)
        for s, acc in settings
    }
    return TuneResult(None, evaluated, {s: True for s in evaluated})


def test_the_worst_case_is_over_every_run_and_attack_and_the_margin_to_the_budget():
    calls = []
    cert = certify(
        BEST, [("r/alpha0.5-seed0", 0), ("r/alpha0.5-seed1", 1)], ["white-box", "unsplit"],
        Budget(max_leak=0.3, max_ssim=0.7), _searcher({"alpha0.5": 0.2}, calls),
    )  # fmt: skip
    assert len(calls) == 4 and cert.certified
    assert cert.leak == pytest.approx(0.21) and cert.worst["seed"] == 1
    assert cert.margins == pytest.approx({"leak": 0.09, "ssim": 0.19})
    assert cert.margin == pytest.approx(0.09)
    on_the_edge = certify(BEST, [("alpha0.5-seed0", 0)], ["w"], Budget(max_ssim=0.5),
                          _searcher({"alpha0.5": 0.2}, []))  # fmt: skip
    assert not on_the_edge.certified  # SSIM must stay strictly below its limit


def test_a_setting_broken_by_the_search_gives_way_to_the_next_most_accurate():
    result = _result([(BEST, 0.97), (WEAK, 0.95), (STRONG, 0.90)])
    spec = SimpleNamespace(attack_names=["inverse-network"], seeds=[0, 1])
    leaks = {BEST.slug: 0.5, WEAK.slug: 0.15, STRONG.slug: 0.05}
    calls = []
    searcher = _searcher(leaks, calls)
    out = certify_best(result, spec, "t", Budget(max_leak=0.2), searcher, lambda r, n: [None])
    assert out.best is out.evaluated[WEAK]
    assert [c.certified for c in out.certificates.values()] == [False, True]
    assert out.certificate.setting == WEAK and out.certificate.margin == pytest.approx(0.04)
    assert {c[0].split("-seed")[0] for c in calls} == {BEST.slug, WEAK.slug}  # not STRONG
    none = certify_best(result, spec, "t", Budget(max_leak=0.01), searcher, lambda r, n: [None])
    assert none.best is None and len(none.certificates) == 3


def test_tune_refuses_a_setting_that_only_a_weak_attack_lets_through(tmp_path, capsys):
    out = tmp_path / "t"
    args = ["tune", "--epochs", "2", "--dcor-samples", "40", "--quiet", "--max-ssim", "0.4",
            "--attack", "inverse-network:steps=2,width=8", "--search", "alpha=1",
            "--iterations", "0", "--steps", "80", "--attack-budget", "1",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "re-attack undefended: searched worst" in printed and "NOT certified" in printed
    assert "no setting holds under the full re-attack" in printed
    tuned = json.loads((out / "tune.json").read_text())
    undefended = tuned["candidates"][0]
    assert undefended["meets_budget"] and undefended["certified"] is False
    assert tuned["best"] is None and tuned["certifications"][0]["margins"]["ssim"] < 0


def test_a_bad_attack_budget_is_refused_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--max-ssim", "0.3", "--attack-budget", "0", "--out", str(tmp_path / "t")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--attack-budget: must be a whole number >= 1" in err
    assert not (tmp_path / "t").exists()
