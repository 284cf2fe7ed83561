"""Plug-ins: a package's entry points add an attack, a defense, a data set and a model that the
CLI then uses like built-ins; a broken plug-in is one error line naming it and its package.

The plug-in is "installed" without touching the venv: a ``*.dist-info`` folder with an
``entry_points.txt`` plus its module, in a temp dir put on ``PYTHONPATH`` of a subprocess
(``importlib.metadata`` finds distributions on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from nopeek import TrainConfig
from nopeek.data import DATASETS
from nopeek.defenses import parse_defense_option, sender_transform
from nopeek.errors import ConfigError, PluginError
from nopeek.eval import Setting, SweepSpec
from nopeek.eval.sweep import validate
from nopeek.plugins import ENTRY_GROUPS, load_entries

PLUGIN = '''
from collections import OrderedDict

import torch
from torch import nn

from nopeek.attacks import Attack, LabelScores, Reconstruction, ThreatModel
from nopeek.data import Dataset, Split
from nopeek.defenses import Defense
from nopeek.models import ModelSpec


def load(*, seed, data_root=None, download=False, max_train=None):
    """Two Gaussian blobs, 6 features: 48 train, 16 test, 16 aux."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(80) % 2
    x = torch.randn(80, 6, generator=gen) + 2.0 * y[:, None]
    ids = torch.arange(80)
    part = lambda a, b: Split(x=x[a:b], y=y[a:b], ids=ids[a:b])
    return Dataset(name="blobs", train=part(0, 48), test=part(48, 64), aux=part(64, 80),
                   input_shape=(6,), n_classes=2, kind="tabular",
                   data_range=float(x.max() - x.min()), class_names=("a", "b"))


def _mlp(shape, n_classes):
    return nn.Sequential(OrderedDict(fc1=nn.Linear(shape[0], 8), act=nn.ReLU(),
                                     out=nn.Linear(8, n_classes)))


MLP = ModelSpec(name="tiny-mlp", description="6 -> 8 -> classes", build=_mlp,
                input_kind="any", default_cut="act", cuts=("fc1", "act"))


class Scale(Defense):
    """Multiplies what the data party sends by ``factor``, in training and at inference."""

    name = "scale"
    options = {"factor": "float"}
    positional = "factor"
    acts_at = "data"
    acts_on_queries = True

    def __init__(self, *, factor=2.0):
        super().__init__()
        self.factor = factor

    def params(self):
        return {"factor": self.factor}

    def forward(self, cut, z, *, training):
        return z * self.factor


class MeanGuess(Attack):
    """Guesses the aux mean for every victim: scores exactly the mean-image baseline."""

    name = "mean-guess"
    threat_model = ThreatModel(activations=True, aux_data=True)

    def run(self, inputs):
        ids = inputs.activations.ids
        guess = inputs.aux.x.mean(0, keepdim=True).expand(len(ids), *inputs.input_shape)
        return Reconstruction(ids=ids, x_hat=guess.clone())


class QueryRatio(MeanGuess):
    """Queries the client on the aux inputs and records how the answers compare with what the
    client segment itself computes: <answer, raw> / <raw, raw>."""

    name = "query-ratio"
    threat_model = ThreatModel(
        activations=True, aux_data=True, query_client=True, client_weights=True
    )

    def run(self, inputs):
        x = inputs.aux.x
        with torch.no_grad():
            raw = inputs.client_segment(x)
        answer = inputs.query_client(x)
        out = super().run(inputs)
        out.extra["ratio"] = float((answer * raw).sum() / (raw * raw).sum())
        return out


class Coin(Attack):
    """A label attack that ranks one class against the other: binary tasks only."""

    name = "coin"
    kind = "label"
    binary_only = True
    threat_model = ThreatModel(gradients=True)

    def run(self, inputs):
        seen = inputs.gradients
        return LabelScores(ids={0: seen.ids}, scores={0: torch.zeros(len(seen.ids))})
'''

ENTRY_POINTS = """
[nopeek.attacks]
mean-guess = toy_plugin:MeanGuess
query-ratio = toy_plugin:QueryRatio
coin = toy_plugin:Coin

[nopeek.defenses]
scale = toy_plugin:Scale

[nopeek.datasets]
blobs = toy_plugin:load

[nopeek.models]
tiny-mlp = toy_plugin:MLP
"""


def _install(root: Path, module: str, entry_points: str, dist: str = "toy_plugin") -> Path:
    """Lay out a distribution ``dist`` (module + dist-info) under ``root``; returns root."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "toy_plugin.py").write_text(textwrap.dedent(module))
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    return root


def _nopeek(root: Path, *commands: list[str]) -> subprocess.CompletedProcess:
    """Run ``nopeek`` commands one after the other in one subprocess (one start-up)."""
    env = os.environ | {"PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    calls = "; ".join(f"assert main({list(c)!r}) == 0" for c in commands)
    script = f"from nopeek.cli.main import main; {calls}"
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """In this process: lay out a plug-in and make the registries look for plug-ins afresh."""
    from nopeek.attacks import ATTACKS
    from nopeek.defenses import DEFENSES
    from nopeek.models import MODELS

    def install(module: str, entry_points: str, dist: str = "toy_plugin") -> Path:
        root = _install(tmp_path / "site", module, entry_points, dist)
        monkeypatch.syspath_prepend(str(root))
        monkeypatch.delitem(sys.modules, "toy_plugin", raising=False)
        for registry in (ATTACKS, DEFENSES, DATASETS, MODELS):
            monkeypatch.setattr(registry, "_entries", dict(registry._entries))
            monkeypatch.setattr(registry, "_plugins_loaded", False)
        return root

    yield install
    sys.modules.pop("toy_plugin", None)


def test_the_groups_cover_every_pluggable_registry():
    assert ENTRY_GROUPS == {
        "attack": "nopeek.attacks",
        "defense": "nopeek.defenses",
        "dataset": "nopeek.datasets",
        "model": "nopeek.models",
    }
    assert DATASETS.plugins == "nopeek.datasets"


def test_a_plugin_package_trains_and_attacks_from_the_cli(tmp_path):
    root = _install(tmp_path / "site", PLUGIN, ENTRY_POINTS)
    run = tmp_path / "run"
    flags = ["--dataset", "blobs", "--model", "tiny-mlp", "--defense", "scale:3"]
    train = ["train", *flags, "--epochs", "1", "--out", str(run)]
    attack = ["attack", "--run", str(run), "--attack", "mean-guess,query-ratio"]
    done = _nopeek(root, train, attack)
    assert done.returncode == 0, done.stderr
    config = json.loads((run / "config.json").read_text())
    assert (config["dataset"], config["model"], config["defenses"]) == (
        "blobs",
        "tiny-mlp",
        ["scale:3"],
    )
    result = json.loads((run / "attacks" / "mean-guess.json").read_text())
    assert result["attack"] == "mean-guess" and result["n_samples"] > 0
    assert result["mse"] == pytest.approx(result["baseline_mse"])  # the aux-mean guess
    # the attacker's queries pass through the plug-in's forward defense, as the client's would
    queried = json.loads((run / "attacks" / "query-ratio.json").read_text())
    assert queried["settings"]["ratio"] == pytest.approx(3.0)


def test_plugins_are_listed_and_a_miss_names_them(installed, capsys, tmp_path):
    from nopeek.cli.main import main

    installed(PLUGIN, ENTRY_POINTS)
    assert main(["models"]) == 0
    assert "tiny-mlp" in capsys.readouterr().out
    assert main(["train", "--dataset", "blobz", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'blobz'" in err and "blobs" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("module", "entry", "match"),
    [
        ("import no_such_module\n", "mean-guess = toy_plugin:X", "ModuleNotFoundError"),
        ("X = 3\n", "mean-guess = toy_plugin:X", "is not an nopeek.attacks.Attack"),
        ("X = 3\n", "white-box = toy_plugin:X", "takes the name of a built-in attack"),
    ],
)
def test_a_broken_plugin_is_one_line_naming_it_and_its_package(
    installed, capsys, tmp_path, module, entry, match
):
    from nopeek.cli.main import main

    installed(module, f"[nopeek.attacks]\n{entry}\n", dist="broken_pkg")
    assert main(["attack", "--run", str(tmp_path), "--attack", "mean-guess"]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "Traceback" not in line and line.startswith("error: ")
    assert match in line and "of package broken_pkg" in line


def test_a_defense_plugin_must_carry_its_entry_point_name(installed):
    from nopeek.defenses import parse_defenses

    wrong = PLUGIN.replace('name = "scale"', 'name = "scaler"')
    installed(wrong, "[nopeek.defenses]\nscale = toy_plugin:Scale\n")
    with pytest.raises(PluginError, match=r"defense plug-in 'scale' .*name = 'scaler'"):
        parse_defenses(["scale:2"])


def test_load_entries_refuses_what_the_check_rejects(installed):
    installed("X = 3\n", "[nopeek.models]\nodd = toy_plugin:X\n")

    def check(name, entry):
        raise TypeError(f"{name} is no spec")

    with pytest.raises(PluginError, match=r"cannot load model plug-in 'odd' .*odd is no spec"):
        load_entries("nopeek.models", "model", (), check)
    assert load_entries("nopeek.models", "model", ()) == [("odd", 3)]


X = torch.linspace(-2, 3, 8).reshape(2, 4)
# sender_transform(SPECS, cut="c", seed=3, epochs=2) of X, two queries in a row, as computed
# before defenses declared acts_on_queries (cut noise was then the only one queries went through)
QUERIES_BEFORE = {
    "cut-noise:gaussian,sigma=0.5,clip=1,inference=true": (
        [-1.0955, -0.969, -0.4754, 0.0884, -0.0438, 1.3722, 0.5626, 1.5412],
        [-0.4448, -0.8581, 0.0379, 0.9454, -0.0006, 0.0817, 0.5781, 0.2869],
    ),
    "cut-noise:laplace,b=0.2,clip=1,inference=true": (
        [-0.7141, -0.3111, -0.0573, -0.2846, -0.0323, 0.5735, 0.0666, 0.5847],
        [-0.3688, -0.3036, 0.2185, -0.3129, 0.1977, 0.1309, 0.581, 0.384],
    ),
    "cut-noise:sigma=0.5,clip=1": (
        [-0.8165, -0.5249, -0.2333, 0.0583, 0.2053, 0.3764, 0.5475, 0.7186],
        [-0.8165, -0.5249, -0.2333, 0.0583, 0.2053, 0.3764, 0.5475, 0.7186],
    ),
    "cut-noise:target_epsilon=8,clip=1,inference=true+max-norm": (
        [-1.8233, -2.1275, -1.107, 0.1669, -0.6934, 3.9697, 0.6021, 3.6868],
        [0.5248, -1.7271, 0.7452, 3.2591, -0.5376, -0.687, 0.658, -0.8392],
    ),
    "adversarial:weight=1+cut-noise:sigma=1,clip=2,inference=true": (
        [-2.7491, -2.8263, -1.4351, 0.237, -0.5856, 4.736, 1.1556, 4.7275],
        [-0.1462, -2.3825, 0.6181, 3.6648, -0.4129, -0.426, 1.2175, -0.2896],
    ),
}


def _queries(specs, n=2):
    """``n`` successive answers to the query ``X`` through the defenses of ``specs``."""
    send = sender_transform(specs, cut="c", seed=3, epochs=2)
    return [send(X) for _ in range(n)]


@pytest.mark.parametrize("option", sorted(QUERIES_BEFORE))
def test_cut_noise_answers_queries_as_before(option):
    got = _queries(parse_defense_option(option))
    for answer, before in zip(got, QUERIES_BEFORE[option], strict=True):
        torch.testing.assert_close(answer, torch.tensor(before).reshape(2, 4), atol=1e-4, rtol=0)


def test_a_plugin_forward_defense_answers_the_attackers_queries(installed):
    installed(PLUGIN, ENTRY_POINTS)
    assert torch.equal(_queries(["scale:3"], n=1)[0], 3 * X)
    noise = "cut-noise:gaussian,sigma=0.5,clip=1,inference=true"
    for answer, before in zip(_queries([noise, "scale:3"]), QUERIES_BEFORE[noise], strict=True):
        expected = 3 * torch.tensor(before).reshape(2, 4)
        torch.testing.assert_close(answer, expected, atol=3e-4, rtol=0)


def test_a_forward_defense_that_does_not_declare_it_leaves_queries_alone(installed):
    installed(PLUGIN.replace("    acts_on_queries = True\n", ""), ENTRY_POINTS)
    assert torch.equal(_queries(["scale:3"], n=1)[0], X)


def test_an_attack_plugin_must_carry_its_entry_point_name(installed):
    from nopeek.attacks import ATTACKS

    installed(PLUGIN, "[nopeek.attacks]\nguess = toy_plugin:MeanGuess\n")
    with pytest.raises(PluginError, match=r"attack plug-in 'guess' .*name = 'mean-guess'"):
        ATTACKS.get("guess")


def _sweep(attacks, **base):
    return SweepSpec(TrainConfig(dataset="digits", **base), [Setting()], [0], attacks)


def test_a_binary_only_plugin_attack_is_refused_on_a_multiclass_sweep(installed):
    installed(PLUGIN, ENTRY_POINTS)
    with pytest.raises(ConfigError, match="attack 'coin' needs a binary task, but digits has 10"):
        validate(_sweep(["mean-guess", "coin"]))
    validate(_sweep(["coin"], one_vs_rest=0))  # class 0 vs the rest: binary
    validate(_sweep(["mean-guess"]))  # not declared binary-only: any task
