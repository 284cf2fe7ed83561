"""Training on a cut that a skip connection crosses: one message carries every tensor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from nopeek.cli.main import main
from nopeek.errors import CutError
from nopeek.models.packing import Layout, Packed
from nopeek.runtime import InProcessRuntime
from nopeek.runtime.channel import ACTIVATION, GRADIENT
from nopeek.topology import vanilla
from nopeek.topology.crossings import pack_crossings
from tests.nopeek._resnet_npz import resnet_on_npz, train_at

ROOT = Path(__file__).resolve().parents[2]
FACTORY = "module:tests.nopeek._factory:make"


@pytest.mark.parametrize(
    "shapes, channels, packed",
    [
        ([(3, 4, 4), (5, 4, 4)], True, (8, 4, 4)),  # same spatial size: along the channels
        ([(3, 4, 4), (5, 2, 2)], False, (68,)),  # different: flattened rows side by side
        ([(6,), (2, 3)], False, (12,)),
    ],
)
def test_layout_packs_and_unpacks_exactly(shapes, channels, packed):
    values = [torch.randn(3, *s) for s in shapes]
    layout = Layout.of(values)
    assert layout.channels is channels and layout.packed_shape == packed
    z = layout.pack(values)
    assert tuple(z.shape) == (3, *packed)
    # an independent reference: per sample, the flattened values in order
    for i in range(3):
        want = torch.cat([v[i].reshape(-1) for v in values]) if not channels else None
        if want is not None:
            torch.testing.assert_close(z[i], want, rtol=0, atol=0)
    for got, want in zip(layout.unpack(z), values, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    if channels:
        torch.testing.assert_close(z[:, :3], values[0], rtol=0, atol=0)


def test_layout_refuses_integer_or_mixed_dtypes():
    with pytest.raises(CutError, match=r"cut 'c' carries tensors of dtypes .* one dtype"):
        Layout.of([torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.int64)], "c")


@pytest.mark.parametrize("cut, dims", [("layer1.0.conv1", 4), ("layer2.0.bn2", 2)])
def test_packed_resnet18_composes_and_backpropagates_exactly(cut, dims):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).train()
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([1, 4, 7])
    whole = model(x)
    F.cross_entropy(whole, y).backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    topo = pack_crossings(vanilla(model, [cut]), (3, 32, 32))
    client, server = (n.module for n in topo.nodes)
    assert isinstance(client, Packed) and isinstance(server, Packed)
    assert len(client.gives.shapes) == 2
    z = client(x)
    assert z.shape[0] == 3 and z.dim() == dims  # 4: same spatial size, along the channels
    leaf = z.detach().requires_grad_()
    out = server(leaf)
    torch.testing.assert_close(out, whole, rtol=0, atol=1e-6)
    F.cross_entropy(out, y).backward()
    z.backward(leaf.grad)
    for name, p in model.named_parameters():  # float32 sums in another order: ~1e-7 relative
        error = (p.grad - reference[name]).abs().max() / reference[name].abs().max()
        assert error < 1e-5, name


def _tiny_topology(cut: str):
    from tests.nopeek._factory import make

    torch.manual_seed(0)
    model = make((1, 8, 8), 3)
    return model, pack_crossings(vanilla(model, [cut]), (1, 8, 8))


def test_a_runtime_step_sends_one_message_of_every_crossing_tensor(monkeypatch):
    monkeypatch.chdir(ROOT)
    model, topo = _tiny_topology("block.conv1")
    x, y = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    whole = torch.nn.functional.cross_entropy(model(x), y)
    whole.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    rt = InProcessRuntime(topo)
    out = rt.step({"x": x, "y": y, "ids": torch.arange(5)}, train=True)
    assert out.losses["task"] == pytest.approx(float(whole), rel=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference[name], rtol=0, atol=1e-6, msg=name)
    records = rt.channel.log.records
    assert [r.kind for r in records] == [ACTIVATION, GRADIENT]
    skip = torch.relu(model.stem(x))  # what crosses, computed independently
    carried = 2 * skip.numel() * 4  # the skip and conv1's output: both 8x8x8 float32
    assert records[0].shape == (5, 16, 8, 8) and records[0].nbytes == carried
    assert records[1].nbytes == carried


def test_a_merging_node_cannot_read_a_skip_crossed_cut(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    args = ["train", "--model", FACTORY, "--cut", "block.conv1", "--topology", "vertical"]
    assert main([*args, "--epochs", "1", "--max-train", "40", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "carries 2 tensors (a skip crosses it)" in err
    assert "the server merges the clients' outputs; pick a cut at a block boundary" in err


def test_cli_trains_and_attacks_a_resnet18_cut_inside_a_block(tmp_path, capsys):
    out = tmp_path / "run"
    metrics = train_at(resnet_on_npz(tmp_path, 24), "layer2.0.conv1", out)
    assert metrics["cut"] == "layer2.0.conv1" and 0 <= metrics["test_accuracy"] <= 1
    # the skip (64x4x4 after layer1) and conv1's output (128x2x2) differ in size: flat rows
    per_sample = (64 * 4 * 4 + 128 * 2 * 2) * 4
    sent = metrics["bytes_client_to_server"]
    assert sent > 0 and sent % per_sample == 0
    capsys.readouterr()
    attack = ["attack", "--run", str(out), "--attack", "white-box", "--n-samples", "4"]
    assert main([*attack, "--steps", "20"]) == 0, capsys.readouterr().err
    result = json.loads((out / "attacks" / "white-box.json").read_text())
    assert result["ssim"] is not None
    obs = torch.load(out / "observations.pt", weights_only=True)
    shapes = {tuple(v["tensor"].shape[1:]) for k, v in obs.items() if "forward" in k}
    assert shapes == {(64 * 4 * 4 + 128 * 2 * 2,)}


@pytest.mark.parametrize(
    "topology", [["--topology", "many-clients"], ["--topology", "splitfed", "--splitfed", "v1"]]
)
def test_clients_taking_turns_relay_packed_segments(monkeypatch, tmp_path, topology):
    """The relay hands packed segments over as weights and rebuilds them from the factory."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    args = ["train", "--model", FACTORY, "--cut", "block.conv1", *topology, "--clients", "2"]
    fast = ["--epochs", "2", "--max-train", "60", "--dcor-samples", "16", "--quiet"]
    assert main([*args, *fast, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["weight_bytes_client0"] > 0 and 0 <= metrics["test_accuracy"] <= 1
    obs = torch.load(out / "observations.pt", weights_only=True)
    shapes = {tuple(v["tensor"].shape[1:]) for k, v in obs.items() if "forward" in k}
    assert shapes == {(16, 8, 8)}  # the skip and conv1's output, along the channels


def test_every_attack_runs_on_a_packed_cut(monkeypatch, tmp_path):
    """Fresh copies (unsplit, grad-match) and query answers see the packed message too."""
    from nopeek import TrainConfig
    from nopeek.attacks import ATTACKS, run_attack

    monkeypatch.chdir(ROOT)
    run = tmp_path / "run"
    args = ["train", "--model", FACTORY, "--cut", "block.conv1", "--one-vs-rest", "0"]
    fast = ["--epochs", "1", "--max-train", "60", "--dcor-samples", "16", "--quiet"]
    assert main([*args, *fast, "--out", str(run)]) == 0
    for name in ATTACKS.names():
        if ATTACKS.get(name).threat_model.aux_activations:
            continue  # needs served aux traffic: tests/attacks/test_known_pairs.py
        if ATTACKS.get(name).refusal(TrainConfig()) is not None:
            continue  # an attack for another topology (direct-label: a cut at the logits)
        result = run_attack(run, name, steps=2, n_samples=4, write=False)
        assert result.ssim is not None or result.leak is not None, name
