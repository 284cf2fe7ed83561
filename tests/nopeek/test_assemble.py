"""One way to assemble and restore a run (:mod:`nopeek.training.assemble`), and the state that
moves through ``state_dict()`` / ``load_state_dict()`` of a party, a runtime and a runner.

Round trips go state -> a fresh object built from *another* seed -> ``load_state_dict``: the
weights must be identical and so must the numbers of the next training step (the optimizer's
moments, the compressors' residuals and generators, the hooks' noise generators all travel).
"""

from dataclasses import replace

import pytest
import torch

import nopeek.inference
from nopeek import TrainConfig
from nopeek.errors import CheckpointError
from nopeek.plugins import build_hooks
from nopeek.rundir import checkpoint
from nopeek.training import assemble as assembly
from nopeek.training.assemble import assemble, restore
from nopeek.training.trainer import train

# forward top-k keeps an error-feedback residual, backward rand-k a generator; the cut noise
# keeps its own generator: all three must travel for the next step to match
SETTINGS = dict(
    dataset="digits", max_train=120, epochs=1, batch_size=32, dcor_samples=20, record_samples=32,
    compress="forward=topk:0.2,backward=randk:0.3",
    defenses=["cut-noise:gaussian,sigma=0.5,clip=1"],
)  # fmt: skip


def _config(seed: int = 0) -> TrainConfig:
    return TrainConfig(**SETTINGS, seed=seed).resolved()


def _runner(seed: int, *, hooks: bool = True):
    config = _config(seed)
    return assemble(config, hooks=build_hooks(config) if hooks else (), device="cpu")


def _batch(runner, start: int = 0) -> dict[str, torch.Tensor]:
    train_split = runner.dataset.train
    rows = torch.arange(start, start + 16)
    return {"x": train_split.x[rows], "y": train_split.y[rows], "ids": train_split.ids[rows]}


def _weights(runner) -> dict[str, torch.Tensor]:
    return {
        f"{p}.{i}.{k}": t.detach().clone()
        for p, party in runner.parties.items()
        for i, module in enumerate(party.modules)
        for k, t in module.state_dict().items()
    }


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _step(runner, batch) -> dict[str, float]:
    """One training step of every party (what the run loop does), returning its losses."""
    runner.runtime.train_mode(True)
    for party in runner.parties.values():
        party.zero_grad()
    out = runner.runtime.step(batch, train=True)
    for party in runner.parties.values():
        party.step_optimizer()
    return out.losses


def _trained(*, hooks: bool = True):
    """A runner after two training steps: Adam moments, residuals and generators all moved."""
    runner = _runner(0, hooks=hooks)
    for start in (0, 16):
        _step(runner, _batch(runner, start))
    return runner


@pytest.fixture(scope="module")
def trained():
    return _trained()


def test_a_party_round_trips_through_its_state_dict():
    trained = _trained(hooks=False)  # the parties' state alone decides the next step
    fresh = _runner(1, hooks=False)  # another seed: other weights, other compressor streams
    assert not _same(_weights(trained), _weights(fresh))
    for name, party in fresh.parties.items():
        party.load_state_dict(trained.parties[name].state_dict())
    assert _same(_weights(trained), _weights(fresh))
    batch = _batch(trained, 32)
    assert _step(fresh, batch) == _step(trained, batch)
    assert _same(_weights(trained), _weights(fresh))


def test_a_runtime_round_trips_with_its_hooks(trained):
    fresh = _runner(1)  # another seed: another cut-noise stream too
    fresh.runtime.load_state_dict(trained.runtime.state_dict())
    batch = _batch(trained, 32)
    twin = _runner(0)
    twin.runtime.load_state_dict(trained.runtime.state_dict())
    assert _step(fresh, batch) == _step(twin, batch)
    assert _same(_weights(twin), _weights(fresh))


def test_a_party_state_holds_its_optimizer_and_compressors(trained):
    state = trained.parties["client"].state_dict()
    assert state["held"] == ["client"] and len(state["modules"]) == 1
    assert state["optimizer"]["state"], "Adam's moments after two steps"
    assert state["compressors"]["activation"]["residual"], "top-k's error feedback"


def test_a_relay_client_between_turns_holds_nothing_after_loading():
    config = TrainConfig(dataset="digits", max_train=60, topology="many-clients", clients=2)
    runner = assemble(config.resolved(), device="cpu")
    holder = runner.parties["client1"]
    state = holder.state_dict()
    state["held"], state["modules"], state["optimizer"] = [], [], None
    holder.load_state_dict(state)
    assert holder.modules == [] and holder.optimizer is None
    other = runner.parties["client0"].state_dict()
    holder.load_state_dict(other | {"held": ["client1"]})  # built from its factory again
    assert holder.held == ["client1"] and holder.optimizer is not None


def test_a_runner_round_trips_through_its_state_dict(tmp_path):
    config = _config(0)
    done = assemble(config, hooks=build_hooks(config), device="cpu")
    done.run(None)  # one epoch, then the evaluation and the dCor messages
    state = done.state_dict()
    assert state["epoch"] == 1 and len(state["history"]["train_loss"]) == 1
    fresh = _runner(1)
    fresh.load_state_dict(state)
    assert fresh.epoch == 1 and fresh.history == done.history
    assert fresh.wire.records == done.wire.records
    assert _same(_weights(done), _weights(fresh))
    batch = _batch(done)
    assert _step(fresh, batch) == _step(done, batch)
    assert _same(_weights(done), _weights(fresh))


def test_a_state_that_does_not_fit_is_one_line(trained):
    state = checkpoint.to_file(trained.state_dict())
    state["parties"]["client"] = []
    with pytest.raises(CheckpointError, match="checkpoint does not fit this model"):
        checkpoint.restore(state, _runner(0))


def test_the_checkpoint_file_keeps_its_layout(trained):
    saved = checkpoint.to_file(trained.state_dict())
    assert saved["format"] == checkpoint.FORMAT
    assert set(saved["parties"]) == {"client", "server"}
    assert all(isinstance(sd, dict) for sds in saved["parties"].values() for sd in sds)
    assert set(saved["optimizers"]) == set(saved["held"]) == {"client", "server"}
    back = checkpoint.from_file(saved)
    assert back["parties"]["client"].keys() == trained.parties["client"].state_dict().keys()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    config = TrainConfig(**SETTINGS | {"defenses": [
        "cut-noise:gaussian,sigma=0.5,clip=1,inference=true"]})  # fmt: skip
    train(config, out, quiet=True)
    return out


def _checkpoint_weights(run_dir) -> dict[str, torch.Tensor]:
    state = checkpoint.read(run_dir / checkpoint.FILENAME)
    return {
        f"{p}.{i}.{k}": t
        for p, sds in state["parties"].items()
        for i, sd in enumerate(sds)
        for k, t in sd.items()
    }


def test_restore_loads_the_checkpoints_weights_and_hook_states(run_dir):
    served = restore(run_dir, device="cpu")
    assert _same(_weights(served), _checkpoint_weights(run_dir))
    saved = checkpoint.read(run_dir / checkpoint.FILENAME)["hooks"]
    got = [h.state_dict()["generators"] for h in served.hooks]
    for mine, theirs in zip(got, [h["generators"] for h in saved], strict=True):
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert served.wire.records == [], "what a restored run sends is new"


def test_restore_of_the_segments_alone_sets_no_hook_up(run_dir):
    served = restore(run_dir, segments_only=True, device="cpu")
    assert served.hooks == []
    assert _same(_weights(served), _checkpoint_weights(run_dir))


def test_infer_restores_through_the_one_function(run_dir, monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(args[0])
        return restore(*args, **kwargs)

    monkeypatch.setattr(nopeek.inference, "restore", spy)
    result = nopeek.inference.infer(run_dir)
    assert calls == [run_dir] and result.metrics["n_samples"] > 0


def test_a_missing_checkpoint_and_another_runs_folder_are_one_line(run_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((run_dir / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"has no checkpoint.pt to restore the run from"):
        restore(bare)
    other = replace(_config(0), seed=5)
    with pytest.raises(CheckpointError, match="was made with another configuration"):
        checkpoint.load(run_dir, other)


def test_train_builds_through_assemble(monkeypatch, tmp_path):
    built = []
    real = assembly.assemble

    def spy(*args, **kwargs):
        built.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr("nopeek.training.trainer.assemble", spy)
    config = TrainConfig(dataset="digits", max_train=60, epochs=1, dcor_samples=20)
    train(config, tmp_path / "r", quiet=True)
    assert len(built) == 1 and built[0].seed == 0
