"""Split inference (``nopeek infer``): predictions through the cut of a trained run."""

import csv
import json

import pytest
import torch

from nopeek.attacks.harness import run_attack
from nopeek.cli.main import main
from nopeek.errors import CheckpointError
from nopeek.inference import infer
from nopeek.training.trainer import train

FAST = dict(epochs=1, max_train=300, dcor_samples=50, record_samples=64)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny trained runs by topology: vanilla, u-shaped, many clients (relay), cut noise."""
    root = tmp_path_factory.mktemp("runs")
    from nopeek import TrainConfig

    specs = {
        "vanilla": {},
        "u-shaped": {"topology": "u-shaped", "cut": "conv2,fc1"},
        "relay": {"topology": "many-clients", "clients": 2},
        "noise": {"defenses": ["cut-noise:gaussian,sigma=1,clip=1,inference=true"]},
    }
    out = {}
    for name, extra in specs.items():
        train(TrainConfig(dataset="digits", seed=0, **FAST, **extra), root / name, quiet=True)
        out[name] = root / name
    return out


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.parametrize("name", ["vanilla", "u-shaped", "relay"])
def test_test_accuracy_equals_the_runs(runs, name, tmp_path):
    result = infer(runs[name], split="test", out=tmp_path / "inf")
    assert result.metrics["accuracy"] == _metrics(runs[name])["test_accuracy"]
    rows = list(csv.DictReader((tmp_path / "inf" / "predictions.csv").open()))
    assert len(rows) == result.metrics["n_samples"] == len(result.ids)
    # the CSV's predictions are the argmax of its scores, and its labels the test labels
    hits = [int(r["prediction"]) == int(r["label"]) for r in rows]
    assert sum(hits) / len(hits) == pytest.approx(result.metrics["accuracy"])
    scores = torch.tensor(
        [[float(v) for k, v in r.items() if k.startswith("score_")] for r in rows]
    )
    assert torch.equal(scores.argmax(1), torch.tensor([int(r["prediction"]) for r in rows]))
    assert all(r.phase == "inference" for r in result.wire.records) and result.wire.records
    assert {p.name for p in (tmp_path / "inf").iterdir()} >= {
        ".nopeek.json",
        "predictions.csv",
        "observations.pt",
        "inference.json",
    }


def test_u_shaped_prediction_never_leaves_the_client(runs):
    result = infer(runs["u-shaped"], split="aux")
    n_classes = next(iter(result.logits.values())).shape[1]
    to_server = [r for r in result.wire.records if r.receiver == "server"]
    assert to_server and all(r.sender == "client" for r in to_server)
    # what the client sends is its conv2 activation (N, C, H, W), never (N, classes) logits
    assert all(len(r.shape) == 4 for r in to_server)
    assert all(r.shape[1:] != (n_classes,) for r in result.wire.records if r.sender == "client")
    assert result.metrics["label_party"] == "client" and result.metrics["logits_sent"] is False


def test_cut_noise_at_inference_applies(runs):
    noisy = infer(runs["noise"])
    z = noisy.observations.get(cut="conv2").tensor.flatten(1)
    # clipped to norm 1, then Gaussian noise with sigma 1 in d dimensions: norm ~ sqrt(d)
    assert float(z.norm(dim=1).min()) > 0.5 * z.shape[1] ** 0.5
    clean = infer(runs["vanilla"]).observations.get(cut="conv2").tensor.flatten(1)
    assert float(clean.norm(dim=1).max()) < float(z.norm(dim=1).min())


def test_inference_observations_feed_an_attack(runs, tmp_path):
    run = runs["vanilla"]
    infer(run, split="test", out=tmp_path / "inf")
    kw = dict(steps=30, seed=0, write=False)
    served = run_attack(
        run, "inverse-network", observations=tmp_path / "inf" / "observations.pt", **kw
    )
    trained = run_attack(run, "inverse-network", **kw)
    # the run's own file holds its 50 dCor samples; what the server saw while serving: 360
    assert trained.n_samples == 50 and served.n_samples == 360
    assert served.ssim is not None and served.baseline_ssim is not None


def _err(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    return err


def test_a_run_without_checkpoint_is_one_line(runs, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((runs["vanilla"] / "config.json").read_text())
    with pytest.raises(CheckpointError, match="has no checkpoint.pt"):
        infer(bare)
    assert main(["infer", "--run", str(bare), "--out", str(tmp_path / "o")]) == 2
    assert "checkpoint.pt" in _err(capsys)
    assert not (tmp_path / "o").exists()
    argv = ["attack", "--run", str(runs["vanilla"]), "--attack", "white-box"]
    assert main([*argv, "--observations", str(tmp_path / "none.pt")]) == 2
    assert "no observations file" in _err(capsys)


def test_cli_writes_an_inference_folder(runs, tmp_path, capsys):
    out = tmp_path / "inf"
    assert main(["infer", "--run", str(runs["vanilla"]), "--split", "aux", "--out", str(out)]) == 0
    assert "360 predictions of digits:aux" in capsys.readouterr().out
    assert json.loads((out / ".nopeek.json").read_text())["kind"] == "inference"
    assert main(["infer", "--run", str(runs["vanilla"]), "--out", str(out)]) == 2
    assert "--overwrite" in _err(capsys)
    assert main(["infer", "--run", str(runs["vanilla"]), "--out", str(runs["relay"])]) == 2
    assert "is a nopeek run folder, not an inference folder" in _err(capsys)


def test_traffic_served_from_another_data_set_is_not_attacked(runs, tmp_path, capsys):
    """Its ids number the other set's rows: scoring them against the run's would be wrong."""
    import numpy as np

    from nopeek.data import load_dataset

    ds = load_dataset("digits", seed=0)
    other = tmp_path / "other.npz"
    np.savez(other, x=(1 - ds.test.x).numpy(), y=ds.test.y.numpy())  # the same shape, classes
    out = tmp_path / "inf"
    argv = ["infer", "--run", str(runs["vanilla"]), "--dataset", f"npz:{other}", "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    attack = ["attack", "--run", str(runs["vanilla"]), "--attack", "inverse-network"]
    assert main([*attack, "--observations", str(out / "observations.pt")]) == 2
    err = _err(capsys)
    assert f"was served from --dataset npz:{other}, not from the run's digits" in err
