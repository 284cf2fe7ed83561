"""The Python API applies the config's defenses and malicious server, as the CLI does.

The trainer builds those hooks itself through the ``nopeek.hooks`` entry points
(:mod:`nopeek.plugins`), so ``train(TrainConfig(defenses=[...]))`` is defended, gives the same
weights as ``nopeek train --defense ...``, and a bad spec fails before anything is written.
"""

import json
import subprocess
import sys

import pytest
import torch

from nopeek import CutHook, TrainConfig, train
from nopeek.attacks._fsha_nets import decoder_net
from nopeek.cli.main import main
from nopeek.errors import ConfigError
from nopeek.io import safe_torch_load
from nopeek.plugins import GROUP, build_hooks

TINY = dict(dataset="digits", one_vs_rest=0, epochs=1, max_train=200, dcor_samples=50)
CLI_TINY = ["--dataset", "digits", "--one-vs-rest", "0", "--epochs", "1", "--max-train", "200"]
CLI_TINY += ["--dcor-samples", "50", "--quiet"]


def _weights(run_dir):
    """Every party's trained tensors, in a fixed order (the independent record on disk)."""
    state = safe_torch_load(run_dir / "checkpoint.pt")
    return [t for p in sorted(state["parties"]) for sd in state["parties"][p] for t in sd.values()]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_api_defense_changes_the_weights_and_matches_the_cli(tmp_path):
    spec = "marvell:s=1"
    api = train(TrainConfig(**TINY, defenses=[spec]), tmp_path / "api", quiet=True)
    train(TrainConfig(**TINY), tmp_path / "plain", quiet=True)
    assert main(["train", *CLI_TINY, "--defense", spec, "--out", str(tmp_path / "cli")]) == 0
    assert not _same(_weights(tmp_path / "api"), _weights(tmp_path / "plain"))
    assert _same(_weights(tmp_path / "api"), _weights(tmp_path / "cli"))
    assert api.metrics["marvell_s"] == 1.0 and api.metrics["marvell_noise_power"] > 0
    cli_metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert cli_metrics["marvell_noise_power"] == api.metrics["marvell_noise_power"]
    assert json.loads((tmp_path / "api" / "config.json").read_text())["defenses"] == [spec]


def _victims(result, cut="conv2"):
    """The inference messages that crossed the wire at ``cut`` and the victims' true inputs
    (N, 1, 8, 8), matched by sample id (ground truth, for checking only)."""
    sent = result.observations.get(cut=cut, direction="forward", phase="inference")
    test = result.dataset.test
    row = {int(i): k for k, i in enumerate(test.ids)}
    return sent, test.x[[row[int(i)] for i in sent.ids]]


def test_api_cut_noise_clips_and_noises_what_crosses_the_wire(tiny_config):
    cfg = tiny_config(epochs=1, max_train=200, defenses=["cut-noise:gaussian,sigma=0.5,clip=1"])
    result = train(cfg, quiet=True)
    sent, x = _victims(result)
    with torch.no_grad():  # the client segment (conv1, conv2) of the trained model, by hand
        z = result.model[:2].eval()(x)
    norm = z.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    assert bool((norm > 1).all())  # so clipping changes every message
    # at inference (inference=false) each message is exactly the output clipped to norm 1
    torch.testing.assert_close(sent.tensor, z / norm)
    # in training each carries noise of std sigma * clip = 0.5 on top (||clip(z)||^2 / d <= 1/512)
    noisy = result.observations.get(cut="conv2", direction="forward", phase="train").tensor
    assert float(noisy.pow(2).mean()) == pytest.approx(0.25, abs=0.01)
    assert result.metrics["cut_noise_sigma"] == 0.5 and result.metrics["epsilon_cut"] > 0


def test_api_malicious_server_runs_from_the_config(tmp_path):
    out = tmp_path / "fsha"
    cfg = TrainConfig(dataset="digits", epochs=1, max_train=200, malicious_server="fsha")
    result = train(cfg, out, quiet=True)
    report = json.loads((out / "attacks" / "fsha.json").read_text())
    assert report["attack"] == "fsha"
    assert json.loads((out / "config.json").read_text())["malicious_server"] == "fsha"
    (server,) = safe_torch_load(out / "checkpoint.pt")["hooks"]  # the server's own state
    assert server["step"] == -(-len(result.dataset.train) // 64)  # it hijacked every step
    # its report, recomputed: the server's final decoder on the messages that crossed the wire,
    # against the victims' true inputs; the blind guess is the mean of its aux inputs
    decoder = decoder_net(tuple(server["spec"]["cut_shape"]), (1, 8, 8), unit_range=True)
    decoder.load_state_dict(server["nets"]["decoder"])
    sent, x = _victims(result)
    with torch.no_grad():
        x_hat = decoder.eval()(sent.tensor)
    guess = result.dataset.aux.x.mean(0, keepdim=True)
    assert report["n_samples"] == len(x) > 0
    assert report["mse"] == pytest.approx(float((x_hat.double() - x.double()).pow(2).mean()))
    assert report["baseline_mse"] == pytest.approx(float((guess.double() - x).pow(2).mean()))
    assert report["mse"] != pytest.approx(report["baseline_mse"])  # it decoded, not guessed


class _Seen(CutHook):
    """A custom hook that counts the training activations it sees."""

    name = "seen"

    def __init__(self):
        self.calls = 0

    def forward(self, cut, z, *, training):
        self.calls += training
        return z


def test_custom_hooks_run_together_with_the_configs_hooks():
    seen = _Seen()
    result = train(TrainConfig(**TINY, defenses=["max-norm"]), quiet=True, hooks=[seen])
    assert result.metrics["max_norm_noise_power"] > 0  # the config's defense ran
    assert seen.calls == -(-len(result.dataset.train) // 64)  # ... and so did ours, every step


@pytest.mark.parametrize(
    "change, match",
    [
        ({"defenses": ["marvell:scale=2"]}, "unknown option 'scale' for marvell"),
        ({"defenses": ["marvell:s=1"], "one_vs_rest": None}, "marvell needs binary labels"),
        ({"malicious_server": "nope"}, "unknown malicious server 'nope'"),
    ],
)
def test_a_bad_spec_in_the_api_fails_before_anything_is_written(tmp_path, change, match):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=match):
        train(TrainConfig(**(TINY | change)), out, quiet=True)
    assert not out.exists()


def test_without_an_installed_builder_the_config_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("nopeek.plugins.entry_points", lambda group: [])
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"names defenses \['max-norm'\] but no installed"):
        train(TrainConfig(**TINY, defenses=["max-norm"]), out, quiet=True)
    assert not out.exists()
    assert build_hooks(TrainConfig(**TINY)) == []  # nothing named: nothing needed


def test_the_entry_points_are_installed_and_declare_what_they_handle():
    from importlib.metadata import entry_points

    found = {ep.name: ep.load() for ep in entry_points(group=GROUP)}
    assert found["defenses"].handles == ("defenses",)
    assert found["malicious-server"].handles == ("malicious_server",)


def test_the_core_imports_no_upper_layer():
    code = (
        "import sys, nopeek, nopeek.training.trainer, nopeek.plugins\n"
        "up = sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['nopeek', 'defenses'], ['nopeek', 'attacks'], ['nopeek', 'eval'], ['nopeek', 'cli']))\n"
        "print(up)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
