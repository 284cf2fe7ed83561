"""Defenses whose metrics are means over the steps (running sums in their state) report, after
an interrupted run resumed, exactly what the uninterrupted run reports."""

import pytest

from nopeek import TrainConfig
from nopeek.training.trainer import train


@pytest.mark.parametrize("spec", ["dcae:steps=200", "mixup:alpha=1", "max-norm"])
def test_a_resumed_run_reports_the_same_means(tmp_path, interrupt, spec):
    cfg = TrainConfig(dataset="digits", one_vs_rest=0, epochs=2, max_train=128,
                      record_samples=16, dcor_samples=50, defenses=[spec])  # fmt: skip
    straight = train(cfg, tmp_path / "a", quiet=True).metrics
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", hooks=[interrupt(1, steps=2)], quiet=True)
    resumed = train(cfg, tmp_path / "b", hooks=[interrupt(None)], resume=True, quiet=True).metrics
    name = spec.partition(":")[0].replace("-", "_")
    means = {k for k in straight if k.startswith(name) and isinstance(straight[k], float)}
    assert means, f"{spec} reports no mean"
    assert {k: resumed[k] for k in means} == {k: straight[k] for k in means}
    assert resumed["test_accuracy"] == straight["test_accuracy"]
