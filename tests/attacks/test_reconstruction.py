"""Reconstruction attacks on real digits runs: each must beat the trivial baseline by a margin.

Small but real: the runs train for 5-20 epochs and the attacks use few steps/victims, so the
whole file runs in about a minute on one thread. The figures asserted here are the ones the
README reports (at full size there).
"""

import json

import pytest
import torch

from nopeek import TrainConfig, load_dataset, train
from nopeek.attacks import ATTACKS, Attack, AttackInputs, Reconstruction, ThreatModel, run_attack
from nopeek.attacks.base import RECONSTRUCTION
from nopeek.errors import ThreatModelError


def _inputs_by_id(ids):
    """The digits inputs of ``ids``, looked up independently of the harness."""
    ds = load_dataset("digits", seed=0)
    table = {}
    for part in (ds.train, ds.test, ds.aux):
        table.update({int(i): x for i, x in zip(part.ids, part.x)})
    return torch.stack([table[int(i)] for i in ids])


def _train(tmp_path_factory, name: str, **kw):
    out = tmp_path_factory.mktemp(name)
    config = TrainConfig(dataset="digits", seed=0, batch_size=64, **kw)
    result = train(config, out, quiet=True)
    return out, result.metrics


@pytest.fixture(scope="module")
def conv1(tmp_path_factory):
    return _train(tmp_path_factory, "conv1", cut="conv1", epochs=5)


@pytest.fixture(scope="module")
def fc1(tmp_path_factory):
    return _train(tmp_path_factory, "fc1", cut="fc1", epochs=5)


@pytest.fixture(scope="module")
def conv2_pair(tmp_path_factory):
    plain = _train(tmp_path_factory, "conv2", cut="conv2", epochs=20)
    nopeek = _train(tmp_path_factory, "conv2_nopeek", cut="conv2", epochs=20, alpha=3.0)
    return plain, nopeek


def test_white_box_inverts_conv1_and_does_worse_deeper(conv1, fc1):
    shallow = run_attack(conv1[0], "white-box", n_samples=32, steps=300)
    deep = run_attack(fc1[0], "white-box", n_samples=32, steps=300, write=False)
    assert shallow.n_samples == 32 and shallow.cut == "conv1"
    assert shallow.ssim >= 0.9
    assert shallow.ssim > shallow.baseline_ssim + 0.4
    assert shallow.mse < shallow.baseline_mse / 20
    assert deep.ssim < shallow.ssim - 0.2  # fc1 (64 units after ReLU) loses information
    saved = json.loads((conv1[0] / "attacks" / "white-box.json").read_text())
    assert saved["ssim"] == pytest.approx(shallow.ssim)
    assert saved["threat_model"] == "activations+client_weights"
    assert (conv1[0] / "attacks" / "white-box.png").stat().st_size > 1000


def test_unsplit_beats_the_baseline_without_weights_or_data(conv1):
    result = run_attack(conv1[0], "unsplit", n_samples=32, steps=100, write=False)
    assert result.threat_model == "activations+client_architecture"
    assert result.ssim > result.baseline_ssim + 0.3
    assert result.mse < result.baseline_mse / 3


def test_inverse_network_reconstructs_and_nopeek_makes_it_worse(conv2_pair):
    (plain_dir, plain), (nopeek_dir, nopeek) = conv2_pair
    assert nopeek["dcor_test"] < plain["dcor_test"] - 0.2  # NoPeek really decorrelated the cut
    assert abs(nopeek["test_accuracy"] - plain["test_accuracy"]) < 0.05  # at similar utility
    before = run_attack(plain_dir, "inverse-network", steps=600, write=False)
    after = run_attack(nopeek_dir, "inverse-network", steps=600, write=False)
    assert before.n_samples == 360  # every observed victim: all test samples
    assert before.ssim >= 0.8 and before.mse < before.baseline_mse / 5
    assert after.ssim < before.ssim - 0.02
    assert after.mse > 1.4 * before.mse


class _Oracle(Attack):
    """Test double: returns the true inputs in *reversed* id order, and records its inputs."""

    name = "oracle"
    kind = RECONSTRUCTION
    threat_model = ThreatModel(activations=True, aux_data=True, client_architecture=True)
    seen: AttackInputs | None = None

    def run(self, inputs):
        type(self).seen = inputs
        ids = inputs.activations.ids.flip(0)
        return Reconstruction(ids=ids, x_hat=_inputs_by_id(ids))


@pytest.fixture
def oracle(monkeypatch):
    monkeypatch.setitem(ATTACKS._entries, "oracle", _Oracle)
    return _Oracle


def test_harness_scores_by_id_and_grants_only_the_threat_model(conv1, oracle):
    result = run_attack(conv1[0], "oracle", n_samples=10, aux_size=50, seed=3, write=False)
    assert result.ssim == pytest.approx(1.0) and result.mse == 0.0  # matched by id, not position
    seen = oracle.seen
    assert seen.client_segment is None and seen.query_client is None and seen.gradients is None
    observed = seen.activations.ids
    assert len(observed) == 10 and bool((observed[1:] > observed[:-1]).all())  # smallest ids
    test_ids = load_dataset("digits", seed=0).test.ids
    assert bool(torch.isin(observed, test_ids).all())  # the victims are test samples
    assert len(seen.aux) == 50 and bool((seen.aux.y == -1).all())  # no aux labels granted
    clone = seen.client_architecture()
    trained = torch.load(conv1[0] / "checkpoint.pt", weights_only=True)["parties"]["client"][0]
    fresh_w = clone.state_dict()["conv1.0.weight"]
    assert not torch.allclose(fresh_w, trained["conv1.0.weight"])  # fresh weights, not trained


def test_harness_refuses_ids_the_attack_never_observed(conv1, monkeypatch):
    class Liar(_Oracle):
        def run(self, inputs):
            ids = load_dataset("digits", seed=0).train.ids[:4]  # not among the observed victims
            return Reconstruction(ids=ids, x_hat=_inputs_by_id(ids))

    monkeypatch.setitem(ATTACKS._entries, "liar", Liar)
    with pytest.raises(ThreatModelError, match="did not observe"):
        run_attack(conv1[0], "liar", n_samples=4, write=False)
    assert not (conv1[0] / "attacks" / "liar.json").exists()


def test_query_access_gives_detached_outputs_of_the_trained_client(conv1, monkeypatch):
    class Prober(_Oracle):
        threat_model = ThreatModel(activations=True, query_client=True)

    monkeypatch.setitem(ATTACKS._entries, "prober", Prober)
    run_attack(conv1[0], "prober", n_samples=5, write=False)
    seen = Prober.seen
    assert seen.client_segment is None and seen.aux is None  # query access only
    x = _inputs_by_id(seen.activations.ids).requires_grad_(True)
    z = seen.query_client(x)
    assert not z.requires_grad  # the attacker cannot backpropagate through the client
    assert torch.allclose(z, seen.activations.tensor, atol=1e-5)  # the trained client's outputs
