"""Label DP by randomized response: the keep probability, uniform flips, once per sample."""

import math

import pytest
import torch

from nopeek.defenses import LabelDP, parse_defenses
from nopeek.defenses.label_dp import keep_probability, randomized_response
from nopeek.errors import ConfigError


@pytest.mark.parametrize("epsilon,k", [(1.0, 10), (2.0, 2), (0.5, 5)])
def test_keeps_a_label_with_the_stated_probability_and_flips_uniformly(epsilon, k):
    n = 200_000
    y = torch.randint(k, (n,), generator=torch.Generator().manual_seed(1))
    out = randomized_response(
        y, epsilon=epsilon, n_classes=k, generator=torch.Generator().manual_seed(2)
    )
    p = math.exp(epsilon) / (math.exp(epsilon) + k - 1)
    assert keep_probability(epsilon, k) == pytest.approx(p)
    kept = float((out == y).double().mean())
    assert abs(kept - p) <= 5 * math.sqrt(p * (1 - p) / n)
    flipped = out[out != y] - y[out != y]
    shift = torch.remainder(flipped, k)  # which other class, relative to the true one
    counts = torch.bincount(shift, minlength=k)[1:].double()
    expected = len(flipped) / (k - 1)
    assert float(((counts - expected) / expected.__pow__(0.5)).abs().max()) < 5
    # eps-label-DP: P[out = c | y] / P[out = c | y'] <= e^eps, with equality for c = y
    assert p / ((1 - p) / (k - 1)) == pytest.approx(math.exp(epsilon))


def test_each_sample_is_privatised_once_and_kept_across_epochs(bare_ctx):
    hook = LabelDP(epsilon=0.1)
    hook.setup(bare_ctx(extra={"n_classes": 10}))
    y, ids = torch.arange(10).repeat(20), torch.arange(200)
    first = hook.targets(y, ids=ids, n_classes=10)
    again = hook.targets(y[50:], ids=ids[50:], n_classes=10)
    assert torch.equal(again, first[50:])
    assert float((first != y).double().mean()) > 0.5  # eps = 0.1, K = 10: keep ~ 0.11
    state = hook.state_dict()
    other = LabelDP(epsilon=0.1)
    other.setup(bare_ctx(extra={"n_classes": 10}))
    other.load_state_dict(state)
    assert torch.equal(other.targets(y, ids=ids, n_classes=10), first)
    m = hook.metrics()
    assert m["label_dp_epsilon"] == 0.1
    assert m["label_dp_keep_probability"] == pytest.approx(keep_probability(0.1, 10))
    assert m["label_dp_flipped"] == pytest.approx(float((first != y).double().mean()))


def test_epsilon_is_required_and_positive():
    assert [h.spec() for h in parse_defenses(["label-dp:2"])] == ["label-dp:epsilon=2"]
    with pytest.raises(ConfigError, match="label-dp needs epsilon"):
        parse_defenses(["label-dp"])
    with pytest.raises(ConfigError, match="epsilon must be a finite number > 0"):
        parse_defenses(["label-dp:epsilon=0"])


def test_a_multi_task_label_party_is_refused(tmp_path):
    from nopeek import TrainConfig
    from nopeek.training.trainer import train

    for spec in ("label-dp:epsilon=1", "cae:steps=10"):
        cfg = TrainConfig(
            dataset="digits", topology="multi-task", epochs=1, max_train=64, defenses=[spec]
        )
        with pytest.raises(ConfigError, match="replaces the labels of one task") as err:
            train(cfg, tmp_path / spec.split(":")[0], quiet=True)
        assert "\n" not in str(err.value)


def test_train_reports_the_label_dp_epsilon(tmp_path, capsys):
    from nopeek.cli.main import main

    argv = ["train", "--epochs", "1", "--max-train", "64", "--dcor-samples", "20"]
    assert main([*argv, "--defense", "label-dp:2", "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert "label_dp_epsilon 2.000" in capsys.readouterr().out
