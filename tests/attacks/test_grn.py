"""GRN (Luo et al. 2021): feature inference from a vertical model's predictions.

A linear top with a known solution (the victim's columns follow from the predictions in closed
form) and a real vertical breast-cancer run, each against the mean guess.
"""

import pytest
import torch
from torch import nn

from nopeek import TrainConfig, train
from nopeek.attacks import ATTACKS, AttackInputs, run_attack
from nopeek.attacks.harness import _prepare
from nopeek.attacks.leak import r2_per_feature
from nopeek.errors import ThreatModelError
from nopeek.observe import Observed


class _Linear(nn.Module):
    """logits = own @ A + victim @ B + c."""

    def __init__(self, a, b, c):
        super().__init__()
        self.a, self.b, self.c = a, b, c

    def forward(self, own, victim):
        return own @ self.a + victim @ self.b + self.c


def _centered(t):
    return t - t.mean(1, keepdim=True)


def test_grn_finds_the_closed_form_solution_of_a_linear_top():
    gen = torch.Generator().manual_seed(0)
    m, classes = 256, 5
    own, victim = torch.randn(m, 3, generator=gen), torch.randn(m, 2, generator=gen)
    model = _Linear(*(torch.randn(*s, generator=gen) for s in ((3, 5), (2, 5), (5,))))
    scores = torch.softmax(model(own, victim), -1)
    # softmax fixes the logits up to a constant per row: solve the centered system for victim
    rhs = _centered(scores.log()) - _centered(own @ model.a + model.c)
    exact = rhs @ torch.linalg.pinv(_centered(model.b))  # (M, 5) @ (5, 2)
    assert torch.allclose(exact, victim, atol=1e-4)
    zeros = torch.zeros(m, dtype=torch.long)
    inputs = AttackInputs((2,), 1.0, classes, seed=0, steps=3000)
    inputs.predictions = Observed(scores, torch.arange(m), zeros, zeros)
    inputs.own_features, inputs.joint_model = own, model.requires_grad_(False)
    inputs.options = {"var_weight": 0.0, "width": 300, "batch_size": m}
    out = ATTACKS.get("grn")().run(inputs)
    guess = torch.zeros_like(victim)  # the mean guess: the columns' mean, 0 here
    r2 = r2_per_feature(victim, out.x_hat, guess)
    # own and victim columns are independent: the generator fits each victim by its own
    # columns (as keys), approaching the closed form as its prediction fit goes to 0
    assert min(r2) > 0.6, r2
    assert out.extra["prediction_fit"] < 3e-3
    assert max(r2_per_feature(victim, exact, guess)) == pytest.approx(1.0, abs=1e-6)


@pytest.fixture(scope="module")
def vertical_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("grn") / "run"
    cfg = TrainConfig(dataset="breast-cancer", topology="vertical", clients=2, epochs=15, seed=0)
    train(cfg, out, quiet=True)
    return out


def test_grn_recovers_a_passive_clients_columns_better_than_the_mean_guess(vertical_run):
    result = run_attack(vertical_run, "grn", steps=800, party="client0", write=False)
    assert result.threat_model == "predictions+joint_model+own_features"
    assert result.n_samples == 114  # every test sample's prediction
    assert result.leak > 0.1 and result.r2 > 0.05  # the mean guess scores 0
    assert result.settings["prediction_fit"] < 1e-2


class _Recording(dict):
    def __init__(self):
        super().__init__()
        self.read = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


def test_grn_reads_exactly_its_declared_options(vertical_run):
    attack, _run, inputs = _prepare(vertical_run, "grn", None, None, 0, None, 8)
    inputs.steps, inputs.options = 1, _Recording()
    assert len(attack.run(inputs).ids) == 8
    assert inputs.options.read == set(attack.option_keys)


def test_grn_is_refused_where_it_does_not_apply(vertical_run, tmp_path):
    assert "vertical" in ATTACKS.get("grn").refusal(TrainConfig())
    assert ATTACKS.get("grn").refusal(TrainConfig(topology="vertical")) is None
    plain = tmp_path / "plain"
    train(TrainConfig(dataset="breast-cancer", epochs=1, max_train=100), plain, quiet=True)
    with pytest.raises(ThreatModelError, match="a vanilla run has no feature slices"):
        run_attack(plain, "grn", steps=1)
    active = tmp_path / "active"
    cfg = TrainConfig(dataset="breast-cancer", topology="vertical", label_party="client0")
    train(TrainConfig(**(cfg.to_dict() | {"epochs": 1, "max_train": 100})), active, quiet=True)
    with pytest.raises(ThreatModelError, match="client0 holds the labels"):
        run_attack(active, "grn", steps=1, party="client0")
    result = run_attack(active, "grn", steps=5, write=False)  # the passive client by default
    assert result.party == "client1"
