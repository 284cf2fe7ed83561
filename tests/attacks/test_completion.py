"""Model completion: passive (own bottom + a few labels) and active (a malicious optimizer)."""

import pytest
import torch
from torch import nn

from nopeek import TrainConfig
from nopeek.attacks import ThreatModel, run_attack
from nopeek.attacks.active_completion import ActiveCompletion, MaliciousOptimizer, step_ratios
from nopeek.attacks.completion import PassiveCompletion
from nopeek.errors import ThreatModelError
from nopeek.training.trainer import train


@pytest.fixture(scope="module")
def vertical_cancer(tmp_path_factory):
    """Vertical breast-cancer, two hospitals with 15 columns each, labels at the server."""
    out = tmp_path_factory.mktemp("completion") / "run"
    cfg = TrainConfig(
        dataset="breast-cancer", topology="vertical", epochs=5, record_samples=64, dcor_samples=50
    )
    train(cfg, out, quiet=True)
    return out


def test_passive_completion_labels_vertical_breast_cancer_from_40_labels(vertical_cancer):
    result = run_attack(vertical_cancer, "passive-completion", aux_size=40, steps=150, write=False)
    assert result.aux_size == 40 and result.n_samples == 341  # every training sample
    majority = 0.63  # the blind guess: always the commoner class (measured train share 0.628)
    assert result.accuracy > majority + 0.2 and result.leak > 0.5  # measured 0.94 and 0.97
    assert result.settings["labelled"] == 40 and result.party == "client0"
    assert result.threat_model == (
        "aux_data+client_weights+client_architecture+aux_labels+own_train_inputs"
    )


def test_passive_completion_sees_only_the_attackers_own_slice(vertical_cancer):
    attack, seen = PassiveCompletion(), {}
    original = attack.run

    def spy(inputs):
        seen["own"], seen["aux"] = inputs.own_train_inputs, inputs.aux
        seen["others"] = (inputs.gradients, inputs.activations, inputs.query_client)
        return original(inputs)

    attack.run = spy
    from nopeek.attacks.harness import _prepare

    _, _, inputs = _prepare(vertical_cancer, "passive-completion", None, None, 0, 20, None)
    inputs.steps = 5
    spy(inputs)
    assert seen["own"].x.shape[1:] == (15,) and bool((seen["own"].y == -1).all())
    assert seen["aux"].x.shape[1:] == (15,) and bool((seen["aux"].y >= 0).all())
    assert seen["others"] == (None, None, None)


def test_passive_completion_refuses_a_party_without_its_own_inputs(tmp_path):
    out = tmp_path / "u"
    train(
        TrainConfig(
            dataset="digits",
            topology="u-shaped",
            cut="conv2,fc1",
            epochs=1,
            max_train=64,
            record_samples=8,
            dcor_samples=20,
        ),
        out,
        quiet=True,
    )
    with pytest.raises(ThreatModelError, match="holds none of its own") as err:
        run_attack(out, "passive-completion", steps=1, write=False)
    assert "\n" not in str(err.value)


def test_step_ratios_follow_fu_et_al():
    g, last = torch.tensor([0.5, -2.0, 1.0, 3.0]), torch.tensor([1.0, 1.0, -1.0, 0.1])
    expected = (1 + g / (last + 1e-7)).clamp(1, 5)  # MaliciousSGD's ratio, clipped to [1, 5]
    assert torch.allclose(step_ratios(g, last, gamma=1.0, max_ratio=5.0), expected)
    assert torch.equal(step_ratios(g, None, gamma=1.0, max_ratio=5.0), torch.ones(4))


def test_the_malicious_optimizer_scales_each_coordinates_step():
    """Wrapping SGD it is Fu et al.'s MaliciousSGD: p -= lr * r * g."""
    p = nn.Parameter(torch.tensor([1.0, 1.0, 1.0]))
    opt = MaliciousOptimizer(torch.optim.SGD([p], lr=0.1))
    grads = [torch.tensor([1.0, 1.0, 1.0]), torch.tensor([2.0, -1.0, 10.0])]
    expected = p.detach().clone()
    last = None
    for g in grads:
        p.grad = g.clone()
        opt.step()
        expected -= 0.1 * step_ratios(g, last, gamma=1.0, max_ratio=5.0) * g
        last = g
    assert torch.allclose(p.detach(), expected)
    state = opt.state_dict()
    again = MaliciousOptimizer(torch.optim.SGD([p], lr=0.1))
    again.load_state_dict(state)
    assert torch.equal(again.last[0], grads[-1])


def test_active_completion_wraps_the_data_partys_optimizer_only(tmp_path):
    cfg = TrainConfig(
        dataset="digits",
        epochs=1,
        max_train=128,
        record_samples=16,
        dcor_samples=20,
        malicious_server="active-completion",
    )
    result = train(cfg, tmp_path / "run", quiet=True)
    assert result.metrics["active_completion_mean_ratio"] > 1.0
    hook = ActiveCompletion()
    assert hook.acts_at == "data"
    assert PassiveCompletion.threat_model != ThreatModel()  # the passive step after training
    attack = run_attack(tmp_path / "run", "passive-completion", aux_size=40, steps=20, write=False)
    assert attack.leak is not None


def test_the_strongest_completion_is_searched_without_observed_messages(vertical_cancer):
    """Model completion observes no message; the search reads the cut from its own segment."""
    from nopeek.attacks.search import strongest

    found = strongest(
        vertical_cancer,
        "passive-completion",
        budget=2,
        pinned={"steps": 20, "aux_size": 20},
        write=False,
    )
    assert 0.5 < found.worst.leak <= 1.0
