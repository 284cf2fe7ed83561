"""Fault injection with real kills: ``nopeek train`` killed (SIGKILL) at seeded random points.

A killed run continued with ``--resume`` must end with exactly the metrics (timing aside) and
bit-identical weights and observations of an uninterrupted run of the same command, and leave
no temporaries; a run killed before its first checkpoint must refuse ``--resume`` in one line
and be retrained with ``--overwrite``; an ``--overwrite`` killed midway must leave the old run
byte for byte. Also: divergence, and a ragged last batch of one sample under NoPeek.

The killed processes are real children (``python -m nopeek.cli.main``, see the ``kill_child``
fixture). They start at once, to share their start-up (importing torch is most of their life),
and each is killed right after it wrote its n-th file of some kind (config.json, a checkpoint,
a checkpoint's temporary), plus a seeded random delay. The uninterrupted references and the
resumes run in this process through :func:`nopeek.cli.main.main`, with the same arguments: a
child's numbers equal this process's (one thread each), which the comparisons check too.
"""

import json
import random
import re
import shutil
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import nopeek.rundir.checkpoint as checkpoint
from nopeek import Observations, TrainConfig
from nopeek.cli.main import main
from nopeek.errors import CheckpointError
from nopeek.io import TEMP_NAME

EPOCHS = 4
TRAIN = ["train", "--dataset", "digits", "--epochs", str(EPOCHS), "--max-train", "300"]
TRAIN += ["--quiet", "--record-samples", "32", "--dcor-samples", "32", "--device", "cpu"]
KILLED = -signal.SIGKILL
# kill point -> the seed of its run (and of the random part of where it is killed)
SEEDS = {"before-first-checkpoint": 0, "mid-epoch": 1, "mid-checkpoint-write": 2, "overwrite": 3}


def _argv(seed, out, *extra) -> list[str]:
    return [*TRAIN, "--seed", str(seed), "--out", str(out), *extra]


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def _metrics(run) -> dict:
    """metrics.json without its timings (``train_seconds``)."""
    metrics = json.loads((run / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if not k.endswith("_seconds")}


def _bits(t: torch.Tensor):
    return t.dtype, tuple(t.shape), t.detach().contiguous().numpy().tobytes()


def _assert_same_run(run, reference) -> None:
    """Same metrics (timings aside), bit-identical weights of every party, same observations."""
    assert _metrics(run) == _metrics(reference)
    got = torch.load(run / checkpoint.FILENAME, weights_only=True)
    want = torch.load(reference / checkpoint.FILENAME, weights_only=True)
    assert got["epoch"] == want["epoch"] == EPOCHS
    assert got["parties"].keys() == want["parties"].keys()
    for party, modules in want["parties"].items():
        assert len(got["parties"][party]) == len(modules)
        for mine, theirs in zip(got["parties"][party], modules):
            assert mine.keys() == theirs.keys()
            for key in theirs:
                assert _bits(mine[key]) == _bits(theirs[key]), f"{party} {key}"
    obs = Observations.load(run / "observations.pt").groups
    ref = Observations.load(reference / "observations.pt").groups
    assert obs.keys() == ref.keys()
    for key in ref:
        assert _bits(obs[key]["tensor"]) == _bits(ref[key]["tensor"]), key


def _tree(root) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _leftovers(run) -> list[str]:
    """Temporaries of atomic writes inside ``run``, and its staging / set-aside siblings."""
    inside = [p.name for p in run.rglob(".*") if TEMP_NAME.match(p.name) or "nopeek-" in p.name]
    return inside + [p.name for p in run.parent.glob(f".{run.name}.nopeek-*")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """``reference(seed)``: the folder of an uninterrupted run (made once, in this process)."""
    root, made = tmp_path_factory.mktemp("reference"), {}

    def get(seed: int):
        if seed not in made:
            assert main(_argv(seed, root / f"seed{seed}")) == 0
            made[seed] = root / f"seed{seed}"
        return made[seed]

    return get


def _where(name: str, out, epoch: float) -> dict:
    """Where to kill the child of kill point ``name`` (``kill_child``'s keywords), seeded;
    ``epoch``: roughly how long an epoch takes, in seconds."""
    rng = random.Random(SEEDS[name])
    if name == "before-first-checkpoint":  # some way into the first epoch
        return dict(root=out, pattern="config.json", count=1, delay=rng.uniform(0, epoch / 4))
    if name == "mid-epoch":  # some way into the 2nd or 3rd epoch
        count, delay = rng.randint(1, 2), rng.uniform(0.2, 0.8) * epoch
        return dict(root=out, pattern=checkpoint.FILENAME, count=count, delay=delay)
    if name == "mid-checkpoint-write":  # while the 2nd or 3rd checkpoint is written
        return dict(root=out, pattern=".checkpoint.pt.*.tmp", count=rng.randint(2, 3))
    # an --overwrite: some way into its 2nd to 4th epoch, in its staging folder
    count, delay = rng.randint(1, 3), rng.uniform(0, epoch)
    pattern = f".{out.name}.nopeek-staging-*/{checkpoint.FILENAME}"
    return dict(root=out.parent, pattern=pattern, count=count, delay=delay)


@pytest.fixture(scope="module")
def killed(tmp_path_factory, reference, kill_child):
    """kill point -> (run folder, exit status, stderr) of a child killed there.

    ``overwrite`` is ``train --seed 3 --overwrite`` of a copy of the finished seed-1 run,
    killed once its staging folder holds a checkpoint or more.
    """
    root = tmp_path_factory.mktemp("killed")
    epoch = json.loads((reference(0) / "metrics.json").read_text())["train_seconds"] / EPOCHS
    old = root / "overwrite" / "run"
    shutil.copytree(reference(1), old)
    jobs = {}
    for name, seed in SEEDS.items():
        out = old if name == "overwrite" else root / name / "run"
        extra = ["--overwrite"] if name == "overwrite" else []
        jobs[name] = (out, _argv(seed, out, *extra), _where(name, out, epoch))
    with ThreadPoolExecutor(len(jobs)) as pool:
        runs = {n: pool.submit(kill_child, argv, **where) for n, (_, argv, where) in jobs.items()}
        return {n: (jobs[n][0], *future.result()) for n, future in runs.items()}


@pytest.mark.parametrize("name", ["mid-epoch", "mid-checkpoint-write"])
def test_a_killed_run_resumes_to_exactly_the_uninterrupted_run(name, killed, reference):
    out, status, err = killed[name]
    assert status == KILLED, f"the run ended by itself ({status}) before its kill: {err}"
    assert not (out / "metrics.json").exists()
    state = checkpoint.read(out / checkpoint.FILENAME)  # a kill mid-write spares the old one
    assert 1 <= state["epoch"] < EPOCHS
    lock = f".{out.name}.nopeek-lock"  # the killed writer's: the kernel released its lock
    assert all(TEMP_NAME.match(f) or f == lock for f in _leftovers(out)), _leftovers(out)
    assert main(_argv(SEEDS[name], out, "--resume")) == 0
    _assert_same_run(out, reference(SEEDS[name]))
    assert _leftovers(out) == []


def test_a_run_killed_before_its_first_checkpoint_is_retrained_with_overwrite(
    killed, reference, capsys
):
    out, status, err = killed["before-first-checkpoint"]
    assert status == KILLED, f"the run ended by itself ({status}) before its kill: {err}"
    assert (out / "config.json").is_file() and not (out / checkpoint.FILENAME).exists()
    assert main(_argv(0, out, "--resume")) == 2
    fix = "train without --resume, with --overwrite"
    assert re.search(rf"no checkpoint in \S+ to resume .*; {fix}", _err(capsys))
    assert main(_argv(0, out)) == 2  # a partial run is still a run: not replaced silently
    assert "pass --overwrite" in _err(capsys)
    assert main(_argv(0, out, "--overwrite")) == 0
    _assert_same_run(out, reference(0))
    assert _leftovers(out) == []


def test_an_overwrite_killed_midway_keeps_the_old_run_byte_for_byte(killed, reference):
    out, status, err = killed["overwrite"]
    assert status == KILLED, f"the overwrite ended by itself ({status}) before its kill: {err}"
    assert _tree(out) == _tree(reference(1))
    assert main(_argv(SEEDS["overwrite"], out, "--overwrite")) == 0
    assert _metrics(out)["seed"] == SEEDS["overwrite"]
    assert _leftovers(out) == []  # the staging folder of the killed attempt is gone too


def test_a_run_killed_after_its_last_checkpoint_resumes(reference, tmp_path, monkeypatch):
    # a kill between the last epoch's checkpoint and metrics.json, made without timing: the
    # finishing step is interrupted as it writes metrics.json (observations.pt is written)
    import nopeek.training.runner

    out = tmp_path / "run"
    write = nopeek.training.runner.atomic_write_json

    def interrupted(path, obj):
        if Path(path).name == "metrics.json":
            raise KeyboardInterrupt
        write(path, obj)

    monkeypatch.setattr(nopeek.training.runner, "atomic_write_json", interrupted)
    assert main(_argv(0, out)) == 130
    monkeypatch.setattr(nopeek.training.runner, "atomic_write_json", write)
    assert not (out / "metrics.json").exists() and (out / "observations.pt").exists()
    assert main(_argv(0, out, "--resume")) == 0
    _assert_same_run(out, reference(0))


def test_a_run_killed_while_writing_its_marker_runs_again(reference, tmp_path):
    # what a kill in the marker's write leaves (seen with real kills of sweeps), made without timing
    out = tmp_path / "run"
    out.mkdir()
    (out / "..nopeek.json.k1ll3d00.tmp").write_text('{"kind": "ru')
    assert main(_argv(0, out)) == 0
    _assert_same_run(out, reference(0))
    assert _leftovers(out) == []


# ------------------------------------------------------------------ divergence

DIVERGES = ["--lr", "1e20"]  # Adam steps of 1e20: the loss is NaN by the 2nd step


def test_divergence_is_one_line_naming_the_epoch_and_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_argv(0, out, *DIVERGES)) == 2
    message = _err(capsys)
    assert re.match(r"error: training diverged at epoch 1, step \d+ \(loss (nan|inf)\)", message)
    assert "lower --lr (now 1e+20)" in message
    assert not out.exists()


def test_a_diverging_overwrite_keeps_the_old_run(reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference(1), out)
    assert main(_argv(1, out, "--overwrite", *DIVERGES)) == 2
    assert "training diverged at epoch 1" in _err(capsys)
    assert _tree(out) == _tree(reference(1))
    assert _leftovers(out) == []


@pytest.mark.parametrize(
    "diverges",
    [
        pytest.param(
            ["--lr", "1e38"],
        ),
        pytest.param(
            ["--alpha", "1e38"],
        ),
    ],
    ids=["huge-lr", "huge-alpha"],
)
def test_every_divergence_is_reported_as_divergence(diverges, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_argv(0, out, *diverges)) == 2
    assert re.match(r"error: training diverged at epoch 1, step \d+", _err(capsys))
    assert not out.exists()


# ------------------------------------------------------------------ a ragged last batch


def test_a_last_batch_of_one_sample_trains_and_resumes_under_nopeek(tmp_path, monkeypatch):
    n = len(TrainConfig(dataset="digits", max_train=300, seed=0).resolved().load_data().train)
    batch = max(b for b in range(2, 65) if n % b == 1)  # every epoch ends on one sample
    args = ["--alpha", "1", "--batch-size", str(batch)]
    assert main(_argv(0, tmp_path / "full", *args)) == 0
    save = checkpoint.save

    def save_then_interrupt(out, runner, epochs_done, **kw):  # Ctrl-C after epoch 2
        save(out, runner, epochs_done, **kw)
        if epochs_done == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_interrupt)
    assert main(_argv(0, tmp_path / "cut", *args)) == 130
    monkeypatch.setattr(checkpoint, "save", save)
    assert main(_argv(0, tmp_path / "cut", "--resume")) == 0
    _assert_same_run(tmp_path / "cut", tmp_path / "full")


# ------------------------------------------------------------------ capture shards


def test_each_checkpoint_writes_only_its_epochs_captures(tmp_path, monkeypatch, capsys):
    """A checkpoint lists shards, each written once with the captures since the last one; they
    restore the wire log's captures in order, a damaged one is one line, and the finished run
    keeps its captures in observations.pt only."""
    save, sizes, out = checkpoint.save, [], tmp_path / "cut"

    def save_then_interrupt(out, runner, epochs_done, **kw):  # Ctrl-C after epoch 2
        save(out, runner, epochs_done, **kw)
        sizes.append(len(runner.wire.captures))
        if epochs_done == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_interrupt)
    assert main(_argv(0, out)) == 130
    capsys.readouterr()
    state = torch.load(out / checkpoint.FILENAME, weights_only=True)
    assert state["captures"] == []  # none inline
    bounds = [0, *sizes]
    want = [[f"{a:08d}-{b:08d}.pt", b - a] for a, b in zip(bounds, bounds[1:]) if b > a]
    assert [list(f) for f in state["capture_files"]] == want and len(want) == 2
    restored = checkpoint.read(out / checkpoint.FILENAME)["captures"]
    shards = [torch.load(out / "captures" / n, weights_only=True) for n, _ in want]
    assert len(restored) == sizes[-1] == sum(len(s) for s in shards)
    for got, saved in zip(restored, [c for s in shards for c in s]):
        assert tuple(got[0]) == tuple(saved[0]) and torch.equal(got[1], saved[1])

    kept = (out / "captures" / want[1][0]).read_bytes()
    (out / "captures" / want[1][0]).write_bytes(kept[: len(kept) // 2])
    monkeypatch.setattr(checkpoint, "save", save)
    assert main(_argv(0, out, "--resume")) == 2
    assert f"capture shard {out / 'captures' / want[1][0]} is corrupt" in _err(capsys)
    (out / "captures" / want[1][0]).write_bytes(kept)
    assert main(_argv(0, out, "--resume")) == 0
    assert main(_argv(0, tmp_path / "full")) == 0
    _assert_same_run(out, tmp_path / "full")
    assert not (out / "captures").exists()


def test_a_kill_between_a_shard_and_its_checkpoint_resumes(reference, tmp_path, monkeypatch):
    """Epoch 2's shard is written, its checkpoint is not: the shard is listed nowhere, and the
    resumed epoch 2 writes it again under the same name."""
    out, save = tmp_path / "run", checkpoint.atomic_torch_save

    def interrupted(obj, path):
        if Path(path).name == checkpoint.FILENAME and obj["epoch"] == 2:
            raise KeyboardInterrupt
        save(obj, path)

    monkeypatch.setattr(checkpoint, "atomic_torch_save", interrupted)
    assert main(_argv(0, out)) == 130
    monkeypatch.setattr(checkpoint, "atomic_torch_save", save)
    listed = torch.load(out / checkpoint.FILENAME, weights_only=True)["capture_files"]
    assert len(listed) == 1 and len(list((out / "captures").iterdir())) == 2  # one unlisted
    assert main(_argv(0, out, "--resume")) == 0
    _assert_same_run(out, reference(0))


@pytest.mark.parametrize("damage", ["gap", "name"])
def test_a_checkpoint_listing_shards_it_cannot_have_written_is_one_line(tmp_path, capsys, damage):
    out = tmp_path / "run"
    assert main(_argv(0, out, "--epochs", "2")) == 0
    state = torch.load(out / checkpoint.FILENAME, weights_only=True)
    state["capture_files"] = {"gap": [["00000003-00000004.pt", 1]],
                              "name": [["../checkpoint.pt", 1]]}[damage]  # fmt: skip
    torch.save(state, out / checkpoint.FILENAME)
    with pytest.raises(CheckpointError) as info:
        checkpoint.read(out / checkpoint.FILENAME)
    want = {"gap": "out of order or with gaps", "name": "field 'capture_files' must be"}[damage]
    assert want in str(info.value) and "\n" not in str(info.value)


def test_a_party_killed_between_keeping_and_writing_its_checkpoint_loads_the_previous(tmp_path):
    """A distributed party renames checkpoint.pt to checkpoint.prev.pt, then writes the next:
    killed in between, it has only the previous one, which load then reads."""
    out = tmp_path / "run"
    assert main(_argv(0, out, "--epochs", "2")) == 0
    config = TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
    (out / checkpoint.FILENAME).rename(out / checkpoint.PREVIOUS)
    assert checkpoint.load(out, config)["epoch"] == 2
    assert checkpoint.load_epoch(out, config, 2)["epoch"] == 2
