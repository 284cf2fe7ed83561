"""The report card's searched verdicts: a setting is called safe only if each attack's search
finds no stronger attacker, the sweep's own attack counts as a member, and the card says so."""

from types import SimpleNamespace

from nopeek.eval.card_search import searched_card
from nopeek.eval.report import report_card
from nopeek.eval.results import read_results
from nopeek.eval.summary import summarize


def _searcher(leaks, calls):
    """A search whose worst member reaches ``leaks[setting folder]`` (SSIM 0.9) with width 64."""

    def search(run, name, party, seed):
        calls.append((run.name, name))
        leak = leaks[run.name.rsplit("-seed", 1)[0]]
        result = SimpleNamespace(to_json=lambda: {"attack": name, "leak": leak, "ssim": 0.9})
        worst = SimpleNamespace(result=result, config={"width": 64, "aux_size": None})
        return SimpleNamespace(leak=leak, worst=worst)

    return search


def test_a_setting_the_search_breaks_is_not_recommended(tiny_sweep):
    sweep, _ = tiny_sweep
    summaries = summarize(read_results(sweep))
    calls = []
    card = searched_card(summaries, sweep, _searcher({"alpha0": 0.95, "alpha1": 0.97}, calls))
    assert card.recommended is None
    assert card.reference.attacks["white-box"].mean == 0.95  # every seed's worst member
    assert card.tried and set(card.tried.values()) <= {0.95, 0.97}
    assert card.configs["undefended"] == {"inverse-network": "width=64", "white-box": "width=64"}
    searched = {run.rsplit("-seed", 1)[0] for run, _ in calls}
    assert "alpha0" in searched and len(calls) == 2 * 2 * len(searched)  # 2 attacks x 2 seeds
    text = "\n".join(str(b) for b in report_card(summaries, searched=card))
    assert "No swept setting keeps every attack's leak at or below 0.2" in text
    assert "worst attacker found" in text and "width=64" in text


def test_a_weaker_search_never_lowers_the_sweeps_own_figure(tiny_sweep):
    sweep, _ = tiny_sweep
    summaries = summarize(read_results(sweep))
    card = searched_card(summaries, sweep, _searcher({"alpha0": -1.0, "alpha1": -1.0}, []))
    fixed = next(s for s in summaries if s.undefended)
    for attack, stat in fixed.attacks.items():
        assert card.reference.attacks[attack].mean == stat.mean
    assert set(card.configs["undefended"].values()) == {"the sweep's"}


def test_a_setting_failing_at_fixed_strength_is_not_searched(tiny_sweep):
    sweep, _ = tiny_sweep
    summaries = summarize(read_results(sweep))
    calls = []
    card = searched_card(summaries, sweep, _searcher({}, calls), limit=-1.0)
    assert calls == [] and card.reference is None and card.recommended is None
    text = "\n".join(str(b) for b in report_card(summaries, limit=-1.0, searched=card))
    assert "without a defense (fixed strength: a lower bound)" in text
