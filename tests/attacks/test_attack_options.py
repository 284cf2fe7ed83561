"""Attack options: every attack declares the keys it reads, and any other key is refused.

The completeness check is by behaviour: each registered attack runs on a tiny finished run with
an options mapping that records every key looked up; the keys read must be exactly the declared
``option_keys``.
"""

import re

import pytest

from nopeek import TrainConfig, train
from nopeek.attacks import ATTACKS, run_attack
from nopeek.attacks.harness import _prepare
from nopeek.cli.main import main
from nopeek.errors import ConfigError
from nopeek.observe import Observed


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A binary digits run: every attack (reconstruction and label) can run on it."""
    out = tmp_path_factory.mktemp("opts") / "run"
    config = TrainConfig(dataset="digits", one_vs_rest=0, epochs=1, max_train=200, dcor_samples=50)
    train(config, out, quiet=True)
    return out


class _Recording(dict):
    """An empty options mapping that remembers every key an attack looks up."""

    def __init__(self):
        super().__init__()
        self.read = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)

    def pop(self, key, *default):
        self.read.add(key)
        return super().pop(key, *default)

    def setdefault(self, key, default=None):
        self.read.add(key)
        return super().setdefault(key, default)


def test_every_registered_attack_declares_its_option_keys():
    assert len(ATTACKS) >= 6
    for name in ATTACKS:
        entry = ATTACKS.get(name)
        cls = entry if isinstance(entry, type) else type(entry)
        assert "option_keys" in vars(cls), f"{name} does not declare option_keys"
        keys = cls.option_keys
        assert isinstance(keys, tuple) and all(isinstance(k, str) for k in keys), name
        assert len(set(keys)) == len(keys), name


@pytest.mark.parametrize("name", ATTACKS.names())
def test_the_keys_an_attack_reads_are_exactly_the_declared_ones(run_dir, name):
    if ATTACKS.get(name).refusal(TrainConfig(dataset="digits")) is not None:
        pytest.skip("an attack on another topology: its own tests check its keys (test_grn.py)")
    attack, _run, inputs = _prepare(run_dir, name, None, None, 0, None, 8)
    inputs.steps, inputs.options = 1, _Recording()
    if attack.threat_model.aux_activations:  # this run served no aux sample: stand-in pairs
        seen, k = inputs.activations, 4
        inputs.aux_activations = Observed(
            seen.tensor[:k], inputs.aux.ids[:k], seen.epoch[:k], seen.step[:k]
        )
    attack.run(inputs)
    assert inputs.options.read == set(attack.option_keys)


def test_run_attack_refuses_an_unknown_option_before_writing(run_dir):
    with pytest.raises(
        ConfigError,
        match=r"^unknown option 'stepz' for attack white-box; valid options: tv, lr, restarts, "
        r"decode$",
    ):
        run_attack(run_dir, "white-box", steps=1, options={"stepz": 2})
    assert not (run_dir / "attacks").exists()
    with pytest.raises(ConfigError, match="valid options: positive$"):
        run_attack(run_dir, "norm", options={"positve": "majority"})


def test_a_declared_option_is_applied_and_recorded(run_dir):
    result = run_attack(
        run_dir, "white-box", steps=1, n_samples=4, options={"tv": 0.5}, write=False
    )
    assert result.settings["tv"] == 0.5


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", ["sweep", "tune"])
def test_sweep_and_tune_refuse_an_unknown_option_before_training(tmp_path, capsys, command):
    out = tmp_path / "s"
    argv = [command, "--epochs", "1", "--max-train", "100", "--quiet", "--out", str(out)]
    argv += ["--attack", "inverse-network:steps=2,width=8,white-box:stepz=2"]
    argv += ["--max-ssim", "0.3"] if command == "tune" else []
    assert main(argv) == 2
    err = _one_line(capsys)
    valid = "tv, lr, restarts, decode, steps"
    assert re.search(rf"unknown option 'stepz' for attack white-box; valid options: {valid}", err)
    assert not out.exists()
