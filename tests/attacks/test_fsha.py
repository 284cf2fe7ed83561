"""Feature-space hijacking (FSHA) as a malicious server during training."""

import json

import pytest
import torch

from nopeek import Observations, load_dataset, train
from nopeek.attacks import build_malicious_server
from nopeek.attacks.fsha import FSHAServer
from nopeek.cli.main import main
from nopeek.errors import ConfigError, ThreatModelError

STEPS_PER_EPOCH = 17  # 1077 digits training samples at batch 64


def _truth(run_dir, cut="conv2"):
    """The victims' true inputs, by id, and the aux mean: the independent reference."""
    obs = Observations.load(run_dir / "observations.pt").get(cut=cut)
    ds = load_dataset("digits", seed=0)
    pos = {i: k for k, i in enumerate(ds.test.ids.tolist())}
    x = ds.test.x[[pos[i] for i in obs.ids.tolist()]]
    return x, ds.aux.x.mean(0, keepdim=True)


def test_cli_fsha_reconstructs_the_victims_far_better_than_the_baseline(tmp_path):
    out = tmp_path / "f"
    epochs = 8
    argv = ["train", "--dataset", "digits", "--malicious-server", "fsha", "--epochs", str(epochs)]
    assert main([*argv, "--dcor-samples", "200", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "attacks" / "fsha.json").read_text())
    assert (out / "attacks" / "fsha.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["attack"] == "fsha" and "malicious server" in report["threat_model"]
    assert report["n_samples"] == 200
    x, aux_mean = _truth(out)
    assert report["baseline_mse"] == pytest.approx(float(((x - aux_mean) ** 2).mean()), rel=1e-5)
    # the attack: far below the trivial baseline on every metric
    assert report["mse"] < 0.6 * report["baseline_mse"]
    assert report["psnr"] > report["baseline_psnr"] + 2.0
    assert report["ssim"] > report["baseline_ssim"] + 0.15
    # ... and it got there over training: error falls from about the baseline
    steps, curve = report["steps"], report["mse_per_step"]
    assert steps == sorted(set(steps)) and steps[-1] == epochs * STEPS_PER_EPOCH
    assert len(curve) == len(steps) == len(report["ssim_per_step"])
    assert curve[-1] == report["mse"]
    assert curve[0] > 1.5 * report["mse"]
    quarter = len(curve) // 4
    assert sum(curve[:quarter]) > 1.3 * sum(curve[-quarter:])
    metrics = json.loads((out / "metrics.json").read_text())
    assert report["client_test_accuracy"] == metrics["test_accuracy"]


def test_the_client_only_gets_the_hijacking_gradient(tiny_config):
    """Under FSHA the client's segment never sees the task: shuffling the labels changes nothing
    the client computes (with an honest server it does), and the decoder's score is reproducible
    from the hook's own decoder and the ground truth."""
    acts = {}
    for shuffle in (False, True):
        cfg = tiny_config(shuffle_labels=shuffle)  # the hook passed by hand, to inspect it
        hook = build_malicious_server("fsha", cfg)
        result = train(cfg, quiet=True, hooks=[hook])
        acts[shuffle] = result.observations.get(cut="conv2")
        honest = train(tiny_config(shuffle_labels=shuffle), quiet=True)
        acts["honest", shuffle] = honest.observations.get(cut="conv2")
    assert torch.equal(acts[False].tensor, acts[True].tensor)
    assert not torch.equal(acts["honest", False].tensor, acts["honest", True].tensor)
    assert result.metrics["fsha_mse"] == hook.result["mse"]
    ds = result.dataset
    pos = {i: k for k, i in enumerate(ds.test.ids.tolist())}
    x = ds.test.x[[pos[i] for i in acts[True].ids.tolist()]]
    with torch.no_grad():
        x_hat = hook.nets["decoder"](acts[True].tensor)
    assert float(((x - x_hat) ** 2).mean()) == pytest.approx(hook.result["mse"], rel=1e-5)


def test_resume_gives_exactly_the_uninterrupted_attack(interrupt, tiny_config, tmp_path):
    cfg = tiny_config(malicious_server="fsha")  # the trainer builds the hook from the config
    train(cfg, tmp_path / "full", quiet=True)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", quiet=True, hooks=[interrupt(at=1)])
    assert not (tmp_path / "cut" / "attacks").exists()
    train(cfg, tmp_path / "cut", resume=True, quiet=True, hooks=[interrupt(None)])
    full, resumed = ((tmp_path / r / "attacks" / "fsha.json").read_text() for r in ("full", "cut"))
    assert json.loads(full) == json.loads(resumed)
    assert len(json.loads(full)["steps"]) > 2


def test_tabular_data_get_an_mlp_attack_and_no_ssim(tmp_path):
    out = tmp_path / "bc"
    argv = ["train", "--dataset", "breast-cancer", "--malicious-server", "fsha", "--epochs", "1"]
    assert main([*argv, "--dcor-samples", "50", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "attacks" / "fsha.json").read_text())
    assert report["ssim"] is None and report["baseline_ssim"] is None
    assert report["mse"] > 0 and report["n_samples"] == 50
    assert (out / "attacks" / "fsha.png").stat().st_size > 0


def test_unknown_malicious_server_is_a_one_line_error(tmp_path, capsys):
    argv = ["train", "--malicious-server", "nope", "--out", str(tmp_path / "x"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown malicious server 'nope'; choose one of: active-completion, fsha" in err


def test_an_attack_at_a_cut_the_run_does_not_have_fails_loudly(tiny_config):
    ds = load_dataset("digits", seed=0)
    hook = FSHAServer(aux=ds.aux, cut="fc1", unit_range=True, seed=0)
    with pytest.raises(ThreatModelError, match="never received a batch at cut 'fc1'"):
        train(tiny_config(epochs=1), quiet=True, hooks=[hook])


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"gp_weight": -1.0}, "gp_weight >= 0"),
        ({"lr_discriminator": 0.0}, "learning rates > 0"),
        ({"every": 0}, "every must be >= 1"),
    ],
)
def test_bad_settings_are_one_line_config_errors(setting, message):
    ds = load_dataset("digits", seed=0)
    with pytest.raises(ConfigError, match=message):
        FSHAServer(aux=ds.aux, cut="conv2", unit_range=True, seed=0, **setting)
