"""The attacked run's weights come from the one restore path
(:func:`nopeek.training.assemble.restore`), and they are the checkpoint's."""

import pytest
import torch

import nopeek.attacks._target as target_module
from nopeek import TrainConfig
from nopeek.attacks._target import client_segment, load_weights, rebuild, receiver_segment
from nopeek.rundir import checkpoint
from nopeek.training.assemble import load_run_config
from nopeek.training.trainer import train

FAST = dict(dataset="digits", max_train=120, epochs=1, dcor_samples=20, record_samples=32)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    specs = {"vanilla": {}, "relay": {"topology": "many-clients", "clients": 2}}
    for name, extra in specs.items():
        train(TrainConfig(**FAST, **extra), root / name, quiet=True)
    return root


def _target(run):
    config = load_run_config(run)
    return rebuild(run, config, config.load_data(), cut=None, party=None, label=False)


def _saved(run):
    """(party -> its modules' state dicts, party -> the nodes it held) of the checkpoint."""
    state = checkpoint.read(run / checkpoint.FILENAME)
    return {p: state["parties"][p] for p in state["parties"]}, state.get("held", {})


def _equal(module, sd) -> bool:
    mine = module.state_dict()
    return mine.keys() == sd.keys() and all(torch.equal(mine[k], sd[k]) for k in sd)


@pytest.mark.parametrize("name", ["vanilla", "relay"])
def test_the_attacked_weights_are_the_checkpoints(runs, name, monkeypatch):
    calls = []
    real = target_module.restore

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(target_module, "restore", spy)
    target = _target(runs / name)
    load_weights(target)
    assert len(calls) == 1 and calls[0]["segments_only"] is True  # no defense set up on the weights
    saved, held = _saved(runs / name)
    for party, sds in saved.items():
        nodes = held.get(party, [n.name for n in target.topology.nodes_of(party)])
        for node, sd in zip(nodes, sds, strict=True):
            assert _equal(target.segments[node], sd), node
        for node in (n.name for n in target.topology.nodes_of(party)):
            if node not in nodes:  # a relay client between turns holds nothing
                assert target.segments[node] is None
    assert not any(m.training for m in target.segments.values() if m is not None)


def test_the_segments_an_attack_gets_are_the_checkpoints(runs):
    target = _target(runs / "vanilla")
    saved, _ = _saved(runs / "vanilla")
    head = client_segment(target)  # before load_weights: the untrained, seeded segment
    assert not _equal(head, saved["client"][0])
    load_weights(target)
    assert _equal(client_segment(target), saved["client"][0])
    assert _equal(receiver_segment(target), saved["server"][0])
