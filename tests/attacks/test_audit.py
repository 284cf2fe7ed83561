"""`nopeek audit` on a client segment exported from a digits run (torch.export, TorchScript).

References are independent of the audit: the trained run's own segment (eager, from its
checkpoint), the digits splits loaded afresh, and the mean aux image computed here.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings

import numpy as np
import pytest
import torch

from nopeek.attacks._target import client_segment, load_weights, rebuild
from nopeek.attacks.audit import load_client_model, record
from nopeek.cli.main import main
from nopeek.config import TrainConfig
from nopeek.data import load_dataset
from nopeek.errors import CheckpointError
from nopeek.training.trainer import train

N = 8  # victims per attack: the smallest test ids


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A digits run cut at conv2, its client segment exported as .pt2 and TorchScript .pt."""
    root = tmp_path_factory.mktemp("audit")
    config = TrainConfig(dataset="digits", seed=0, cut="conv2", epochs=3, max_train=300)
    train(config, root / "run", quiet=True)
    ds = load_dataset("digits", seed=0)
    target = rebuild(root / "run", config.resolved(), ds, cut=None, party=None, label=False)
    load_weights(target)
    segment = client_segment(target).eval()
    x = ds.test.x[:4]
    batch = torch.export.Dim("batch")
    program = torch.export.export(segment, (x,), dynamic_shapes=({0: batch},))
    torch.export.save(program, root / "client.pt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace is deprecated
        torch.jit.trace(segment, x).save(str(root / "client.pt"))
    return {"root": root, "segment": segment, "ds": ds}


def _audit(*args: str) -> int:
    return main(["audit", "--victims", "digits", "--aux", "digits", *args])


def _victims(ds):
    order = torch.argsort(ds.test.ids)[:N]
    return ds.test.x[order], ds.test.ids[order]


@pytest.mark.parametrize("suffix", ["pt2", "pt"])
def test_loaded_segment_sends_what_the_trained_one_sends(exported, suffix):
    ds, segment = exported["ds"], exported["segment"]
    loaded = load_client_model(exported["root"] / f"client.{suffix}")
    sent = record(loaded, ds.test, batch=100)  # batches of 100: a short last batch too
    with torch.no_grad():
        want = segment(ds.test.x)
    assert sent.tensor.shape == (len(ds.test), 32, 4, 4)
    assert torch.equal(sent.ids, ds.test.ids)
    torch.testing.assert_close(sent.tensor, want, rtol=1e-5, atol=1e-5)


def test_audit_of_exported_program_reconstructs_its_victims(exported, tmp_path):
    out = tmp_path / "audit"
    client = str(exported["root"] / "client.pt2")
    attacks = "white-box:tv=0,inverse-network"
    args = ["--client-model", client, "--attack", attacks, "--out", str(out)]
    assert _audit(*args, "--steps", "200", "--n-samples", str(N)) == 0
    white = json.loads((out / "attacks" / "white-box.json").read_text())
    inverse = json.loads((out / "attacks" / "inverse-network.json").read_text())
    assert (out / "attacks" / "white-box.png").is_file()
    assert white["n_samples"] == inverse["n_samples"] == N
    assert white["threat_model"] == "activations+client_weights"
    assert inverse["threat_model"] == "activations+aux_data+query_client"
    assert white["ssim"] > 0.9  # conv2 of the digits CNN is invertible with the weights
    # the mean-image baseline, computed here from the aux split and the victims by id
    x, _ = _victims(exported["ds"])
    mean = exported["ds"].aux.x.mean(0, keepdim=True)
    baseline_mse = float(((x - mean) ** 2).mean())
    for result in (white, inverse):
        assert result["baseline_mse"] == pytest.approx(baseline_mse, rel=1e-5)
    assert inverse["mse"] < inverse["baseline_mse"] and inverse["ssim"] > inverse["baseline_ssim"]
    report = (out / "report.md").read_text()
    assert "| white-box |" in report and "| inverse-network |" in report
    assert f"({inverse['baseline_ssim']:.4g})" in report


def test_audit_of_torchscript_and_of_recorded_activations(exported, tmp_path):
    ds, segment = exported["ds"], exported["segment"]
    client = str(exported["root"] / "client.pt")
    out = tmp_path / "ts"
    common = ["--attack", "white-box:tv=0", "--steps", "200"]
    assert _audit("--client-model", client, *common, "--n-samples", str(N), "--out", str(out)) == 0
    assert json.loads((out / "attacks" / "white-box.json").read_text())["ssim"] > 0.9
    # what crossed the wire, recorded by the user, with the segment for the white-box attacker
    x, ids = _victims(ds)
    with torch.no_grad():
        z = segment(x)
    wire = tmp_path / "wire.npz"
    np.savez(wire, activations=z.numpy(), ids=ids.numpy())
    out = tmp_path / "wire"
    args = ["--activations", str(wire), "--client-model", client, *common, "--out", str(out)]
    assert _audit(*args) == 0
    result = json.loads((out / "attacks" / "white-box.json").read_text())
    assert result["n_samples"] == N and result["ssim"] > 0.9


def test_activations_alone_refuse_attacks_that_need_the_segment(exported, tmp_path, capsys):
    ds = exported["ds"]
    with torch.no_grad():
        z = exported["segment"](ds.test.x[:N])
    wire = tmp_path / "wire.pt"
    torch.save({"activations": z, "ids": ds.test.ids[:N]}, wire)
    for attack in ("white-box", "inverse-network"):
        out = tmp_path / attack
        assert _audit("--activations", str(wire), "--attack", attack, "--out", str(out)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "needs the client segment (threat model" in err
        assert "add --client-model" in err and not out.exists()


def test_activations_alone_run_known_pairs_and_measure_dcor(exported, tmp_path, capsys):
    """The user gives only what crossed: the victims' messages and, matched by id, those of the
    attacker's own aux samples. The known-pairs decoder learns from the latter alone."""
    import dcor

    ds, segment = exported["ds"], exported["segment"]
    rows = torch.cat([ds.test.x, ds.aux.x])
    ids = torch.cat([ds.test.ids, ds.aux.ids])
    with torch.no_grad():
        z = segment(rows)
    wire = tmp_path / "wire.pt"
    torch.save({"activations": z, "ids": ids}, wire)
    out = tmp_path / "pairs"
    args = ["--activations", str(wire), "--attack", "known-pairs", "--steps", "300"]
    assert _audit(*args, "--out", str(out)) == 0, capsys.readouterr().err
    result = json.loads((out / "attacks" / "known-pairs.json").read_text())
    assert result["threat_model"] == "activations+aux_data+aux_activations"
    assert result["n_samples"] == len(ds.test)  # the aux rows are the known pairs, not victims
    assert result["settings"]["aux_size"] == len(ds.aux)
    assert result["ssim"] > result["baseline_ssim"] + 0.2
    # the dCor measurement, against the dcor package on the same samples (smallest ids)
    leakage = json.loads((out / "leakage.json").read_text())
    order = torch.argsort(ids)[: leakage["n"]]
    want = dcor.distance_correlation(
        rows[order].reshape(len(order), -1).double().numpy(),
        z[order].reshape(len(order), -1).double().numpy(),
    )
    assert leakage["n"] == min(1000, len(ids))
    assert leakage["dcor_inputs_activations"] == pytest.approx(want, rel=1e-6)
    assert (
        "Distance correlation between the recorded samples' inputs"
        in (out / "report.md").read_text()
    )
    # known pairs need the attacker's samples to be the victims' set's own aux split
    other = _digits_npz(tmp_path / "other.npz", 1)
    argv = ["audit", "--victims", "digits", "--aux", other, *args]
    assert main([*argv, "--out", str(tmp_path / "foreign")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--aux must be the same data as --victims" in err
    # without aux rows in the file there is nothing to learn from
    torch.save({"activations": z[: len(ds.test)], "ids": ds.test.ids}, wire)
    assert _audit(*args, "--out", str(tmp_path / "none")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs the recorded activations of at least 2" in err
    assert not (tmp_path / "none").exists()


def test_a_segment_sending_several_tensors_is_recorded_packed():
    from nopeek.data import Split
    from nopeek.models import split
    from tests.nopeek._factory import make

    torch.manual_seed(0)
    model = make((1, 8, 8), 10).eval()
    client, _ = split(model, "block.conv1")
    x = torch.rand(5, 1, 8, 8)
    seen = record(client, Split(x, torch.zeros(5, dtype=torch.long), torch.arange(5)))
    skip = torch.relu(model.stem(x))
    want = torch.cat([skip, model.block.conv1(skip)], dim=1)  # same size: along the channels
    torch.testing.assert_close(seen.tensor, want.detach(), rtol=0, atol=0)


def _digits_npz(path, channels: int):
    ds = load_dataset("digits", seed=0)
    x = torch.cat([ds.train.x, ds.test.x, ds.aux.x]).repeat(1, channels, 1, 1)
    y = torch.cat([ds.train.y, ds.test.y, ds.aux.y])
    np.savez(path, x=x.numpy(), y=y.numpy())
    return f"npz:{path}"


def test_bad_inputs_are_one_line_and_write_nothing(exported, tmp_path, capsys):
    root = exported["root"]
    torch.save(exported["segment"], root / "pickled.pt")  # a plain pickle of the module
    (root / "old.pt").write_bytes(pickle.dumps({"weights": [1, 2]}))
    wide = _digits_npz(tmp_path / "wide.npz", channels=2)
    pt2, out = str(root / "client.pt2"), tmp_path / "out"
    torch.save(exported["segment"].state_dict(), root / "pickled.pt2")
    wire = tmp_path / "wire.npz"
    np.savez(wire, activations=np.zeros((2, 32, 4, 4), "float32"), ids=np.array([0, 99999]))
    cases = [
        (["--client-model", str(tmp_path / "nothing.pt2")], "no such file"),
        (["--client-model", str(root / "pickled.pt")], "plain pickle"),
        (["--client-model", str(root / "old.pt")], "plain pickle"),
        (["--client-model", pt2, "--attack", "white-bx"], "unknown attack 'white-bx'"),
        (["--client-model", pt2, "--attack", "norm"], "label attack"),
        (["--client-model", pt2, "--attack", "unsplit"], "needs client_architecture"),
        (["--client-model", pt2, "--attack", "white-box:tvv=1"], "unknown option 'tvv'"),
        (["--client-model", pt2, "--aux", wide], "give --aux data shaped like the victims'"),
        (["--client-model", pt2, "--victims", wide, "--aux", wide], "fails on the victims'"),
        ([], "give --client-model FILE"),
        (["--client-model", str(root / "pickled.pt2")], "holds no exported program"),
        (["--activations", str(wire), "--client-model", pt2], "sample id 99999"),
    ]
    for extra, message in cases:
        args = ["--victims", "digits", "--aux", "digits", "--attack", "white-box"]
        args = [*args, "--out", str(out), *extra]  # later flags win
        assert main(["audit", *args]) == 2, message
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert message in err, err
        assert not out.exists()


class _Marker:
    """A global that only an arbitrary unpickler would import."""


def _rewrite(src, dst, edit):
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, edit(name, zin.read(name)))


def test_pt2_with_a_pickled_non_tensor_payload_is_refused_before_loading(exported, tmp_path):
    """torch.export.load would unpickle a ``use_pickle`` weight with weights_only=False."""
    import io

    buffer = io.BytesIO()
    torch.save({"evil": _Marker()}, buffer)

    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            config["config"][next(iter(config["config"]))]["use_pickle"] = True
            return json.dumps(config).encode()
        return buffer.getvalue() if name.endswith("data/weights/weight_0") else data

    _rewrite(exported["root"] / "client.pt2", tmp_path / "evil.pt2", edit)
    with pytest.raises(CheckpointError, match="pickled payload that is not plain tensors"):
        load_client_model(tmp_path / "evil.pt2")


def _schema(name: str, data: bytes) -> bytes:
    """The graph of a .pt2 as another torch version would have written it."""
    if not name.endswith("models/model.json"):
        return data
    graph = json.loads(data)
    graph["schema_version"]["major"] += 90
    return json.dumps(graph).encode()


DAMAGED = {  # an archive torch (or the pre-load check) cannot read -> what the line names
    "weights config not JSON": (
        lambda n, d: b"{not json" if n.endswith("model_weights_config.json") else d,
        r"is damaged \(.*model_weights_config.json is not a JSON object: Expecting property",
    ),
    "weights config a list": (
        lambda n, d: b"[1, 2]" if n.endswith("model_weights_config.json") else d,
        r"is damaged \(.*model_weights_config.json is not a JSON object",
    ),
    "graph of another torch": (
        _schema,
        r"cannot be loaded by torch .* \(Serialized schema version .* does not match .*\); "
        r"re-export it with this torch",
    ),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_a_pt2_torch_cannot_read_is_one_line(exported, tmp_path, capsys, case):
    """Each is one line, exit 2, no traceback and none of torch's logged warnings."""
    edit, message = DAMAGED[case]
    _rewrite(exported["root"] / "client.pt2", tmp_path / "bad.pt2", edit)
    out = tmp_path / "out"
    assert _audit("--client-model", str(tmp_path / "bad.pt2"), "--attack", "white-box",
                  "--out", str(out)) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith("error: --client-model ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not out.exists()


def test_audit_attacks_a_segment_that_sends_several_tensors(tmp_path):
    from nopeek.attacks.audit import AuditInputs, audit
    from nopeek.models import split
    from tests.nopeek._factory import make

    torch.manual_seed(0)
    client, _ = split(make((1, 8, 8), 10).eval(), "block.conv1")
    ds = load_dataset("digits", seed=0)
    material = AuditInputs(client, None, ds, ds.aux)
    results = audit(
        material, ["white-box", "inverse-network"], tmp_path / "a", steps=2, n_samples=4
    )
    assert [r.attack for r in results] == ["white-box", "inverse-network"]
    assert all(r.ssim is not None for r in results)


def _victims_npz(path, ds, n: int = 64, *, labels: bool = True):
    """``n`` digits test rows as a victims file; with labels, class 2 has just 3 of them."""
    x, y = ds.test.x[:n], ds.test.y[:n].clone()
    y[y == 2] = 0
    y[:3] = 2  # far too few to split: a victims file is attacked, never split
    arrays = {"x": x.numpy()} | ({"y": y.numpy()} if labels else {})
    np.savez(path, **arrays)
    return f"npz:{path}", x


@pytest.mark.parametrize("labels", [True, False])
def test_a_small_victims_file_is_attacked_whole(exported, tmp_path, capsys, labels):
    """64 victims with a 3-sample class (or no labels at all), aux from another file: every row
    is a victim, the aux file is the attacker's whole, neither is split."""
    ds = exported["ds"]
    victims, x = _victims_npz(tmp_path / "victims.npz", ds, labels=labels)
    np.savez(tmp_path / "aux.npz", x=ds.aux.x.numpy())  # the attacker's own, unlabelled
    out = tmp_path / "audit"
    argv = ["audit", "--client-model", str(exported["root"] / "client.pt2"), "--victims", victims]
    argv += ["--aux", f"npz:{tmp_path / 'aux.npz'}", "--attack", "white-box:tv=0,n_samples=8"]
    assert main([*argv, "--steps", "200", "--out", str(out)]) == 0, capsys.readouterr().err
    white = json.loads((out / "attacks" / "white-box.json").read_text())
    assert white["n_samples"] == 8 and white["ssim"] > 0.9
    assert json.loads((out / "leakage.json").read_text())["n"] == len(x)  # every row recorded
    # the baseline: the mean of the whole aux file, against the victims with ids 0..7 (rows)
    baseline_mse = float(((x[:8] - ds.aux.x.mean(0, keepdim=True)) ** 2).mean())
    assert white["baseline_mse"] == pytest.approx(baseline_mse, rel=1e-5)


def test_whole_files_keep_their_checks(exported, tmp_path, capsys):
    ds = exported["ds"]
    victims, _ = _victims_npz(tmp_path / "victims.npz", ds)
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 1, 8, 8), "float32"))
    np.savez(tmp_path / "nan.npz", x=np.full((4, 1, 8, 8), np.nan, "float32"))
    np.savez(tmp_path / "noxy.npz", z=np.zeros(3))
    pt2, out = str(exported["root"] / "client.pt2"), tmp_path / "out"
    cases = [
        (f"npz:{tmp_path / 'empty.npz'}", "holds no samples"),
        (f"npz:{tmp_path / 'nan.npz'}", "NaN"),
        (f"npz:{tmp_path / 'noxy.npz'}", "but no 'x'"),
    ]
    for spec, message in cases:
        argv = ["audit", "--client-model", pt2, "--victims", spec, "--aux", victims]
        assert main([*argv, "--attack", "white-box", "--out", str(out)]) == 2, message
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
        assert not out.exists()
    # one file as both victims and aux is still split (the attacker's part is its aux split)
    argv = ["audit", "--client-model", pt2, "--victims", victims, "--aux", victims]
    assert main([*argv, "--attack", "white-box", "--out", str(out)]) == 2
    assert "too few to split" in capsys.readouterr().err
