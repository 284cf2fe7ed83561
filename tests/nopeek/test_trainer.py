"""The split trainer: determinism, exact resume, bytes accounting, leakage metrics."""

import json
from collections import OrderedDict

import dcor
import pytest
import torch
from torch import nn

from nopeek import CutShapeError, Observations, load_dataset, train
from nopeek.io import safe_torch_load


def _weights(run_dir):
    state = safe_torch_load(run_dir / "checkpoint.pt")
    return [t for sds in state["parties"].values() for sd in sds for t in sd.values()]


def test_same_seed_same_numbers_other_seed_other_numbers(tiny_config):
    a = train(tiny_config(), quiet=True).metrics
    b = train(tiny_config(), quiet=True).metrics
    c = train(tiny_config(seed=1), quiet=True).metrics
    drop = ("train_seconds",)
    assert {k: v for k, v in a.items() if k not in drop} == {
        k: v for k, v in b.items() if k not in drop
    }
    assert a["train_loss_per_epoch"] != c["train_loss_per_epoch"]


def test_resume_gives_exactly_the_uninterrupted_weights(interrupt, tiny_config, tmp_path):
    cfg = tiny_config(epochs=3, alpha=0.3)
    train(cfg, tmp_path / "full", quiet=True)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", quiet=True, hooks=[interrupt(at=2)])
    assert safe_torch_load(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 2
    assert not (tmp_path / "cut" / "metrics.json").exists()
    resumed = train(cfg, tmp_path / "cut", resume=True, quiet=True, hooks=[interrupt(None)])
    for a, b in zip(_weights(tmp_path / "full"), _weights(tmp_path / "cut")):
        assert torch.equal(a, b)
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert resumed.metrics["test_accuracy"] == full["test_accuracy"]
    assert resumed.metrics["bytes_client_to_server"] == full["bytes_client_to_server"]
    obs_a = Observations.load(tmp_path / "full" / "observations.pt").groups
    obs_b = Observations.load(tmp_path / "cut" / "observations.pt").groups
    assert obs_a.keys() == obs_b.keys()
    for key in obs_a:
        assert torch.equal(obs_a[key]["tensor"], obs_b[key]["tensor"])


def test_bytes_per_epoch_are_measured_on_the_wire(tiny_config):
    m = train(tiny_config(), quiet=True).metrics
    n_train = len(load_dataset("digits", seed=0).train)
    per_sample = 32 * 4 * 4 * 4  # conv2 output, float32
    assert m["bytes_client_to_server"] == n_train * per_sample
    assert m["bytes_server_to_client"] == n_train * per_sample


def test_dcor_test_matches_the_dcor_package(tiny_config):
    result = train(tiny_config(dcor_samples=120), quiet=True)
    obs = result.observations.get(cut="conv2", direction="forward", phase="inference")
    assert len(obs.ids) == 120 == result.metrics["dcor_sample_size"]
    test = result.dataset.test
    pos = {int(i): k for k, i in enumerate(test.ids)}
    x = test.x[[pos[int(i)] for i in obs.ids]].reshape(120, -1).double().numpy()
    z = obs.tensor.reshape(120, -1).double().numpy()
    assert result.metrics["dcor_test"] == pytest.approx(dcor.distance_correlation(x, z), abs=1e-6)
    assert result.metrics["dcor_test_unbiased"] == pytest.approx(
        dcor.u_distance_correlation_sqr(x, z), abs=1e-6
    )


def test_nopeek_lowers_dcor(tiny_config):
    plain = train(tiny_config(epochs=4), quiet=True).metrics
    noped = train(tiny_config(epochs=4, alpha=2.0), quiet=True).metrics
    assert noped["dcor_test"] < plain["dcor_test"] - 0.05


def test_label_attack_observations_are_recorded_per_epoch_with_ids(tiny_config):
    result = train(tiny_config(epochs=3, record_samples=100), quiet=True)
    grads = result.observations.get(cut="conv2", direction="backward", phase="train")
    assert sorted(set(grads.epoch.tolist())) == [0, 1, 2]
    assert len(grads.at_epoch(1).ids) == 128  # two batches of 64 cover 100 samples
    train_ids = set(result.dataset.train.ids.tolist())
    assert set(grads.ids.tolist()) <= train_ids


def test_a_cut_that_does_not_fit_names_both_shapes(tiny_config):
    model = nn.Sequential(
        OrderedDict(
            conv1=nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten()),
            fc=nn.Linear(100, 10),
        )
    )
    with pytest.raises(CutShapeError, match=r"expects \(N, 100\) but cut 'conv1' gives \(N, 256\)"):
        train(tiny_config(model="custom", cut="conv1"), model=model, quiet=True)
