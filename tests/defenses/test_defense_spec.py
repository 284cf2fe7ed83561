"""The --defense spec grammar: every defense registered, values converted, mistakes named."""

import pytest

from nopeek.defenses import (
    CAE,
    DCAE,
    DEFENSES,
    DPSGD,
    MID,
    Adversarial,
    CutNoise,
    GradientSparsification,
    IsotropicNoise,
    LabelDP,
    Marvell,
    MaxNorm,
    MaxNormMult,
    Mixup,
    parse_defenses,
    parse_spec,
)
from nopeek.errors import ConfigError


def test_every_defense_is_registered_under_its_name():
    classes = (CutNoise, DPSGD, MaxNorm, MaxNormMult, Marvell, IsotropicNoise, Adversarial)
    classes += (GradientSparsification, MID, CAE, DCAE, LabelDP, Mixup)
    assert DEFENSES.names() == sorted(c.name for c in classes)
    for cls in classes:
        assert DEFENSES.get(cls.name) is cls


@pytest.mark.parametrize(
    "spec,name,options",
    [
        ("cut-noise:gaussian,sigma=0.5,clip=1", "cut-noise",
         {"mechanism": "gaussian", "sigma": 0.5, "clip": 1.0}),
        ("cut-noise:laplace,b=0.1,clip=1", "cut-noise",
         {"mechanism": "laplace", "b": 0.1, "clip": 1.0}),
        ("cut-noise:gaussian,target_epsilon=8,clip=1,inference=true", "cut-noise",
         {"mechanism": "gaussian", "target_epsilon": 8.0, "clip": 1.0, "inference": True}),
        (" cut-noise : sigma = 2 , target-epsilon=1 ", "cut-noise",
         {"sigma": 2.0, "target_epsilon": 1.0}),
        ("dp-sgd:epsilon=8,delta=1e-5", "dp-sgd", {"epsilon": 8.0, "delta": 1e-5}),
        ("max-norm", "max-norm", {}),
        ("marvell:s=1", "marvell", {"s": 1.0}),
        ("isotropic:match=marvell,s=0.5", "isotropic", {"match": "marvell", "s": 0.5}),
    ],
)  # fmt: skip
def test_specs_parse_to_typed_options(spec, name, options):
    assert parse_spec(spec) == (name, options)


@pytest.mark.parametrize(
    "spec,match",
    [
        ("noise", "unknown defense 'noise'; choose one of: adversarial, cae, cut-noise, dcae, "
                  "dp-sgd, grad-sparsify, isotropic, label-dp, marvell, max-norm, max-norm-mult, "
                  "mid, mixup"),
        ("", "empty defense"),
        ("cut-noise:sgima=1", "unknown option 'sgima' for cut-noise; valid options: mechanism"),
        ("max-norm:r=1", "unknown option 'r' for max-norm; valid options: none"),
        ("cut-noise:sigma=abc", "sigma must be a finite number, got 'abc'"),
        ("cut-noise:sigma=nan", "sigma must be a finite number"),
        ("cut-noise:sigma=-0.5", "sigma must be a finite number > 0, got -0.5"),
        ("cut-noise:sigma=1,sigma=2", "given twice"),
        ("cut-noise:sigma=1,gaussian", "write key=value"),
        ("marvell:1", "write key=value"),
        ("cut-noise:uniform,sigma=1", "mechanism must be one of gaussian, laplace"),
        ("cut-noise:sigma=1,inference=maybe", "inference must be true or false"),
        ("dp-sgd:epsilon=0", "epsilon must be a finite number > 0"),
        ("marvell:s=-1", "s must be a finite number > 0"),
    ],
)  # fmt: skip
def test_bad_specs_are_one_line_errors_naming_the_fix(spec, match):
    with pytest.raises(ConfigError, match=match.replace("(", r"\(")) as err:
        parse_defenses([spec])
    assert "\n" not in str(err.value)


def test_combinations_are_checked_up_front():
    with pytest.raises(ConfigError, match="given twice"):
        parse_defenses(["max-norm", "max-norm"])
    with pytest.raises(ConfigError, match="marvell needs binary labels.*10 classes.*one-vs-rest"):
        parse_defenses(["marvell:s=1"], n_classes=10)
    with pytest.raises(ConfigError, match="isotropic needs binary labels"):
        parse_defenses(["isotropic:match=marvell"], n_classes=10)
    with pytest.raises(ConfigError, match="differs from --delta"):
        parse_defenses(["dp-sgd:epsilon=8,delta=1e-6"], delta=1e-5)
    parse_defenses(["isotropic:match=max-norm", "max-norm"], n_classes=10)  # fine: not binary


def test_dpsgd_records_what_voids_its_per_sample_analysis():
    hooks = parse_defenses(["dp-sgd:epsilon=8", "cut-noise:sigma=1", "max-norm"], alpha=0.5)
    assert hooks[0].voided_by == ["nopeek alpha=0.5", "max-norm"]
    assert parse_defenses(["dp-sgd:epsilon=8", "cut-noise:sigma=1"])[0].voided_by == []


def test_canonical_specs_show_resolved_parameters():
    specs = [h.spec() for h in parse_defenses(["cut-noise:sigma=0.5", "isotropic"])]
    assert specs == [
        "cut-noise:mechanism=gaussian,sigma=0.5,clip=1,inference=false",
        "isotropic:r=1",
    ]
