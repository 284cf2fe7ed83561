"""The strongest attacker, searched for (issue 22): attack families under successive halving.

The scheduler is tested as a pure function on synthetic objectives; the search itself on real
attack runs against tiny digits runs (2 epochs), with the steps pinned low so that the file runs
in well under a minute on one thread.
"""

import json
import re

import pytest
import torch

from nopeek import TrainConfig, train
from nopeek.attacks import ATTACKS, run_attack
from nopeek.attacks.halving import rungs, sample_configs, successive_halving, t_interval
from nopeek.attacks.harness import _prepare
from nopeek.attacks.search import check_budget, leak_of, strongest
from nopeek.cli.main import main
from nopeek.defenses import run_sender
from nopeek.defenses.knowledge import simulated_decoders
from nopeek.errors import ConfigError

BASE = dict(dataset="digits", epochs=2, batch_size=64, seed=0, dcor_samples=64)
NOISE = "cut-noise:gaussian,sigma=0.1,clip=1,inference=true"


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "run"
    train(TrainConfig(**BASE), out, quiet=True)
    return out


@pytest.fixture(scope="module")
def defended(tmp_path_factory):
    """Fresh noise on every message and a client trained against its own decoder."""
    out = tmp_path_factory.mktemp("search-defended") / "run"
    config = TrainConfig(**BASE | {"epochs": 1}, defenses=[NOISE, "adversarial:weight=1"])
    train(config, out, quiet=True)
    return out


# --- the scheduler, a pure function ------------------------------------------------------------


def test_rungs_halve_down_to_one_at_full_steps():
    assert [(r.fraction, r.size) for r in rungs(8)] == [(0.125, 8), (0.25, 4), (0.5, 2), (1, 1)]
    assert [(r.fraction, r.size) for r in rungs(9, eta=3)] == [(1 / 9, 9), (1 / 3, 3), (1, 1)]
    assert [(r.fraction, r.size) for r in rungs(5)] == [(0.25, 5), (0.5, 2), (1, 1)]
    with pytest.raises(ConfigError):
        rungs(0)


@pytest.mark.parametrize(("n", "eta"), [(8, 2), (9, 3), (5, 2), (7, 3), (1, 2)])
def test_successive_halving_keeps_the_top_fraction_of_every_rung(n, eta):
    quality = torch.rand(n, generator=torch.Generator().manual_seed(n)).tolist()
    calls = []

    def objective(config, fraction, seed):  # a noisy learning curve: better with more steps
        calls.append((config, fraction, seed))
        return quality[config] * fraction + 0.001 * seed

    trials = successive_halving(n, objective, eta=eta, seeds=(0, 1, 2))
    assert [(t.config, t.fraction, t.seed) for t in trials] == calls
    schedule = rungs(n, eta)
    for r, rung in enumerate(schedule[:-1]):
        ran = {t.config: t.score for t in trials if t.rung == r}
        assert len(ran) == rung.size
        kept = {t.config for t in trials if t.rung == r + 1}
        top = sorted(ran, key=lambda c: -ran[c])[: schedule[r + 1].size]
        assert kept == set(top)
    final = [t for t in trials if t.rung == len(schedule) - 1]
    assert [t.seed for t in final] == [0, 1, 2] and len({t.config for t in final}) == 1
    assert final[0].config == max(range(n), key=lambda c: quality[c])
    assert {t.fraction for t in final} == {1.0}


def test_sampling_is_seeded_distinct_and_starts_at_the_defaults():
    space = {"width": (32, 64, 128), "lr": (1e-3, 3e-3), "depth": (1, 2, 3)}
    a, b = sample_configs(space, 6, 7), sample_configs(space, 6, 7)
    assert a == b and len(a) == 6
    assert a[0] == {"width": 32, "lr": 1e-3, "depth": 1}
    assert len({tuple(c.values()) for c in a}) == 6
    assert sample_configs(space, 6, 8) != a
    assert len(sample_configs(space, 100, 0)) == 18  # the whole grid, once each


def test_t_interval_matches_scipy():
    from scipy import stats

    values = [0.41, 0.47, 0.45, 0.52]
    mean, sem = sum(values) / 4, stats.sem(values)
    assert t_interval(values) == pytest.approx(stats.t.interval(0.95, 3, loc=mean, scale=sem))
    assert t_interval([0.5]) is None


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4"])
def test_a_bad_budget_is_refused(bad):
    with pytest.raises(ConfigError, match=r"^--attack-budget must be a whole number >= 1"):
        check_budget(bad)


# --- the search on real attack runs ------------------------------------------------------------


def test_the_worst_case_is_at_least_every_member_and_the_default_attack(plain):
    found = strongest(plain, "inverse-network", budget=3, pinned={"steps": 30}, sender=run_sender)
    leaks = [m.leak for m in found.members]
    assert found.leak == max(leaks) and all(found.leak >= v for v in leaks)
    # rungs 3 -> 1 at 1/2, then the survivor over 3 seeds, plus the defaults at full steps
    assert len(leaks) in (3 + 3, 3 + 3 + 1)
    assert {m.steps for m in found.members if m.rung == 0} == {15}
    default = run_attack(plain, "inverse-network", steps=30, sender=run_sender, write=False)
    assert found.leak >= leak_of(default)
    saved = json.loads((plain / "attacks" / "inverse-network.strongest.json").read_text())
    assert saved["leak"] == pytest.approx(found.leak)
    assert max(m["leak"] for m in saved["members"]) == pytest.approx(saved["leak"])
    assert saved["worst"]["config"] in [m["config"] for m in saved["members"]]
    assert saved["winner"]["ci95"][0] <= saved["winner"]["mean"] <= saved["winner"]["ci95"][1]
    assert len(saved["winner"]["leaks"]) == 3 and saved["seeds"] == [0, 1, 2]


def test_the_same_seed_gives_the_same_search(plain):
    def run(seed):
        s = strongest(plain, "white-box", budget=2, seed=seed, pinned={"steps": 8}, write=False)
        return [(m.config, m.rung, m.seed, m.leak) for m in s.members]

    assert run(5) == run(5)


def test_the_first_candidates_are_the_attack_defaults(plain):
    for name in ("white-box", "inverse-network", "unsplit"):
        cls = ATTACKS.get(name)
        first = {k: v[0] for k, v in cls.search_space.items() if k not in ("steps", "aux_size")}
        kw = dict(steps=3, n_samples=8, sender=run_sender, write=False)
        assert (
            run_attack(plain, name, **kw).ssim == run_attack(plain, name, options=first, **kw).ssim
        )


def test_the_attacker_knows_the_mechanism_not_the_defender_decoder(defended):
    found = strongest(
        defended,
        "inverse-network",
        budget=4,
        pinned={"steps": 8},
        sender=run_sender,
        defender_decoders=simulated_decoders,
        write=False,
    )
    assert found.known.fresh_noise
    assert dict(found.known.defender_widths) == {"conv": 32, "mlp": 256}
    assert found.space["repeats"] == (1, 4)  # denoising: several noisy answers per aux sample
    assert min(found.space["width"]) > 32
    for member in found.members:  # never the defender's own decoder (width 32, conv)
        assert member.config["width"] > 32
        assert member.result.settings["width"] > 32


def test_queries_pass_through_the_defenses_with_fresh_noise(defended):
    attack, _run, inputs = _prepare(
        defended, "inverse-network", None, None, 0, 16, 4, sender=run_sender
    )
    z, x = attack.pairs(inputs, 2)
    assert len(z) == len(x) == 32 and torch.equal(x[:16], x[16:])
    assert not torch.equal(z[:16], z[16:])  # the same inputs, answered with fresh noise
    assert float(z.flatten(1).norm(dim=1).max()) > 1.0  # clipped to 1, then noised
    result = run_attack(
        defended, "inverse-network", steps=2, options={"repeats": 2}, sender=run_sender, write=False
    )
    assert result.settings["repeats"] == 2 and result.settings["aux_size"] == result.aux_size


def test_cli_strongest_writes_the_search_and_prints_the_worst_case(plain, capsys):
    argv = ["attack", "--run", str(plain), "--attack", "white-box:steps=6", "--strongest"]
    assert main([*argv, "--attack-budget", "2", "--n-samples", "8"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"white-box strongest of \d+ runs \(2 configurations", out)
    assert "worst leak" in out and "95% CI" in out
    assert (plain / "attacks" / "white-box.strongest.json").is_file()


@pytest.mark.parametrize("bad", ["0", "-3", "x", "2.5"])
def test_cli_refuses_a_bad_attack_budget_in_one_line(plain, capsys, bad):
    argv = ["attack", "--run", str(plain), "--attack", "white-box", "--strongest"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--attack-budget", bad])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--attack-budget: must be a whole number >= 1" in err


def test_cli_refuses_a_budget_without_strongest(plain, capsys):
    assert (
        main(["attack", "--run", str(plain), "--attack", "white-box", "--attack-budget", "3"]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "add --strongest" in err


def test_audit_strongest_reports_each_attack_at_its_worst(plain, tmp_path, capsys):
    from nopeek.attacks._target import client_segment, load_weights, rebuild
    from nopeek.attacks.audit import AuditInputs, audit
    from nopeek.data import load_dataset

    ds = load_dataset("digits", seed=0)
    target = rebuild(plain, TrainConfig(**BASE).resolved(), ds, cut=None, party=None, label=False)
    load_weights(target)
    material = AuditInputs(client_segment(target).eval(), None, ds, ds.aux)
    out = tmp_path / "audit"
    (result,) = audit(material, ["white-box"], out, steps=6, n_samples=8, attack_budget=2)
    found = json.loads((out / "attacks" / "white-box.strongest.json").read_text())
    written = json.loads((out / "attacks" / "white-box.json").read_text())
    assert written["leak"] == result.leak == found["leak"]
    assert found["leak"] == max(m["leak"] for m in found["members"])
    assert {m["steps"] for m in found["members"]} == {3, 6}  # --steps pins the steps knob
    argv = ["audit", "--victims", "digits", "--aux", "digits", "--client-model", "x.pt"]
    assert main([*argv, "--attack", "white-box", "--attack-budget", "2", "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "add --strongest" in err
