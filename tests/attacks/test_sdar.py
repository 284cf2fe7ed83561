"""SDAR (Zhu et al., NDSS 2024): a simulator trained through the server's own segment on
labelled aux data, regularised towards the observed messages, and a label-conditional decoder."""

import pytest
import torch

from nopeek import TrainConfig, train
from nopeek.attacks import ATTACKS, run_attack
from nopeek.attacks.sdar import condition
from nopeek.errors import ThreatModelError


def test_condition_appends_one_hot_labels():
    z = torch.arange(8.0).reshape(1, 2, 2, 2)
    out = condition(z, torch.tensor([2]), 3)
    assert torch.equal(out[:, :2], z)
    assert out[0, 2:].sum(dim=(1, 2)).tolist() == [0.0, 0.0, 4.0]


def test_sdar_reconstructs_digits_through_the_servers_own_segment(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(dataset="digits", cut="conv2", epochs=8, dcor_samples=120), out, quiet=True)
    result = run_attack(out, "sdar", steps=400, write=False)
    assert result.threat_model == "activations+aux_data+aux_labels+receiver_segment"
    assert result.leak > 0.2 and result.ssim > result.baseline_ssim + 0.1
    assert result.settings["simulator_task_loss"] < 1.0  # the server's model reads the simulator


def test_sdar_is_refused_where_the_server_segment_is_not_the_last(tmp_path):
    assert "u-shaped run" in ATTACKS.get("sdar").refusal(TrainConfig(topology="u-shaped"))
    assert ATTACKS.get("sdar").refusal(TrainConfig()) is None
    out = tmp_path / "u"
    cfg = TrainConfig(dataset="breast-cancer", topology="u-shaped", cut="fc1,fc2", epochs=1)
    train(cfg, out, quiet=True)
    with pytest.raises(ThreatModelError, match="does not map one client's cut to the logits"):
        run_attack(out, "sdar", steps=1)
