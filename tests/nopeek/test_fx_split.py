"""Any model, cut at any named layer: torch.fx segments compose exactly, share the model's
parameters, carry what crosses the cut, and every bad model or cut is one line."""

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from nopeek import TrainConfig
from nopeek.errors import ConfigError, CutError
from nopeek.models import MODELS, build_model, cut_info, cut_names, split
from nopeek.models.fx_split import sends

ROOT = Path(__file__).resolve().parents[2]
FACTORY = "module:tests.nopeek._factory:make"


@pytest.fixture(autouse=True)
def _importable_factory(monkeypatch):
    """``tests.nopeek._factory`` importable, as from the repository root."""
    monkeypatch.syspath_prepend(str(ROOT))


def make_tiny(input_shape, n_classes):
    import importlib

    return importlib.import_module("tests.nopeek._factory").make(input_shape, n_classes)


def _resnet18(n_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=n_classes)


def _compose(segments, x):
    """Run the segments as the parties would: each receives a detached leaf of what crossed
    the previous cut; returns the output and the (sent, received) pairs for backward."""
    z, hops = x, []
    for seg in segments[:-1]:
        out = seg(*z) if isinstance(z, tuple) else seg(z)
        outs = out if isinstance(out, tuple) else (out,)
        leaves = tuple(o.detach().requires_grad_() for o in outs)
        hops.append((outs, leaves))
        z = leaves if isinstance(out, tuple) else leaves[0]
    last = segments[-1]
    return (last(*z) if isinstance(z, tuple) else last(z)), hops


def _backward(loss, hops):
    loss.backward()
    for outs, leaves in reversed(hops):
        torch.autograd.backward(outs, [leaf.grad for leaf in leaves])


def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("cuts", [["layer1"], ["layer1", "layer2"]])
@pytest.mark.parametrize("train", [True, False])
def test_resnet18_split_composes_exactly_and_shares_parameters(cuts, train):
    model = _resnet18().train(train)
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([1, 4, 7])
    whole = model(x)
    F.cross_entropy(whole, y).backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    segments = split(model, cuts)
    assert len(segments) == len(cuts) + 1
    out, hops = _compose(segments, x)
    torch.testing.assert_close(out, whole, rtol=0, atol=1e-6)
    _backward(F.cross_entropy(out, y), hops)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference[name], rtol=0, atol=1e-6, msg=name)

    # the segments hold the model's own parameter objects, each in exactly one segment
    held = [id(p) for seg in segments for p in seg.parameters()]
    assert len(held) == len(set(held))
    assert set(held) == {id(p) for p in model.parameters()}
    first = dict(segments[0].named_parameters())
    assert first["conv1.weight"] is model.conv1.weight
    assert "layer1.0.conv1.weight" in first and "layer2.0.conv1.weight" not in first


def test_cut_names_and_cut_info_of_resnet18():
    model = _resnet18()
    names = cut_names(model)
    outer = [n for n in names if "." not in n]
    assert outer == [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        *[f"layer{i}" for i in range(1, 5)],
        "avgpool",
    ]
    assert "fc" not in names  # nothing runs after the classifier
    info = {c.name: c for c in cut_info(model, torch.zeros(2, 3, 32, 32))}
    assert info["layer1"].carries == ("layer1.1.relu",) and info["layer1"].shapes == ((64, 8, 8),)
    assert info["layer2"].shapes == ((128, 4, 4),)
    # inside a block, the skip connection crosses the cut: two tensors
    assert info["layer2.0.conv1"].carries == ("layer1.1.relu", "layer2.0.conv1")
    assert info["layer2.0.conv1"].shapes == ((64, 8, 8), (128, 4, 4))


def test_a_skip_crossing_the_cut_carries_a_tuple_of_tensors():
    torch.manual_seed(0)
    model = make_tiny((1, 8, 8), 3)
    x = torch.randn(4, 1, 8, 8)
    client, server = split(model, "block.conv1")
    sent = client(x)
    assert isinstance(sent, tuple) and len(sent) == 2
    assert sends(client) == ("relu", "block.conv1")
    skip = torch.relu(model.stem(x))  # an independent computation of what must cross
    torch.testing.assert_close(sent[0], skip, rtol=0, atol=0)
    torch.testing.assert_close(sent[1], model.block.conv1(skip), rtol=0, atol=0)
    torch.testing.assert_close(server(*sent), model(x), rtol=0, atol=1e-6)
    # at the block's end only the block's output crosses
    client, server = split(model, "block")
    assert isinstance(client(x), torch.Tensor) and sends(client) == ("relu_2",)


class _Gate(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x  # data-dependent: fx cannot trace it


class _Root(nn.Module):
    def __init__(self, gate_inside: bool) -> None:
        super().__init__()
        self.a, self.gate, self.b = nn.Linear(4, 4), _Gate(), nn.Linear(4, 2)
        self.gate_inside = gate_inside

    def forward(self, x):
        h = self.a(x)
        if not self.gate_inside and h.sum() > 0:
            h = -h
        return self.b(self.gate(h))


def test_an_untraceable_model_is_one_line_and_an_untraceable_part_is_kept_whole():
    with pytest.raises(CutError, match=r"torch.fx cannot trace _Root.forward \(.*control flow"):
        split(_Root(gate_inside=False), "a")
    assert "move the data-dependent part into a submodule" in _one_line(
        pytest.raises(CutError, split, _Root(gate_inside=False), "a")
    )
    model = _Root(gate_inside=True)
    assert cut_names(model) == ["a", "gate"]
    x = torch.randn(5, 4)
    client, server = split(model, "gate")
    torch.testing.assert_close(server(client(x)), model(x), rtol=0, atol=0)
    with pytest.raises(CutError, match=r"cut 'gate.x' lies inside 'gate', which nopeek keeps "):
        split(model, "gate.x")


class _RawSkip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(self.a(x) + x)  # the raw input is needed after `a`


class _Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.mid, self.b = nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(self.a(self.mid(self.a(x))))  # `a` runs before and after `mid`


class _SizeAcross(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        n = x.size(0)
        return self.b(self.a(x)).view(n, -1)


class _TrainBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        return self.b(h * 0.5 if self.training else h)


@pytest.mark.parametrize(
    "model, cuts, message",
    [
        (_RawSkip, ["a"], r"cut 'a' is not on every path from the input: .* reads the raw input"),
        (_Twice, ["mid"], r"the weights 'a.weight' are used on both sides of cut 'mid'"),
        (_SizeAcross, ["a"], r"cut 'a' would send the non-tensor value 'size'"),
        (_TrainBranch, ["a"], r"runs a different graph in train and eval mode"),
        (_resnet18, ["layer9"], r"unknown cut 'layer9': .*valid cuts include: conv1, bn1"),
        (_resnet18, ["fc"], r"nothing runs after cut 'fc' \(it ends the model\)"),
        (_resnet18, ["layer2", "layer1"], r"must be in model order \('layer2' runs after"),
        (_resnet18, ["layer1", "layer1.1"], r"'layer1' and 'layer1.1' are the same point"),
    ],
)
def test_invalid_cuts_are_one_line_naming_the_layer_and_the_fix(model, cuts, message):
    with pytest.raises(CutError, match=message) as exc_info:
        split(model(), cuts)
    _one_line(exc_info)


class _Normalize(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.full((1, 4), 0.5))
        self.scale = nn.Linear(4, 4)

    def forward(self, x):
        return self.scale(x - self.mean)


class _WithBuffers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm, self.head = _Normalize(), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.relu(self.norm(x)))


def test_a_submodule_reading_its_own_buffers_is_kept_whole_and_follows_the_model():
    model = _WithBuffers()
    assert cut_names(model) == ["norm"]  # not norm.scale: the buffer read stays inside
    client, server = split(model, "norm")
    assert client.norm is model.norm
    model.double()  # like model.to(device) after splitting: the segments follow
    x = torch.rand(3, 4, dtype=torch.float64)
    torch.testing.assert_close(server(client(x)), model(x), rtol=0, atol=0)
    with pytest.raises(CutError, match=r"lies inside 'norm', .*\(it reads its own buffers\)"):
        split(model, "norm.scale")


def test_a_received_activation_is_never_modified_in_place():
    """After cut `bn1` the next layer is an in-place ReLU: the segment clones its input, so a
    received leaf that requires grad can run through it."""
    model = _resnet18().eval()
    x = torch.randn(2, 3, 32, 32)
    client, server = split(model, "bn1")
    leaf = client(x).detach().requires_grad_()
    out = server(leaf)
    out.sum().backward()
    assert leaf.grad is not None
    torch.testing.assert_close(out, model(x), rtol=0, atol=1e-6)


def test_sequential_models_keep_the_fast_path():
    model = build_model("digits-cnn", input_shape=(1, 8, 8), n_classes=10)
    client, server = split(model, "conv2")
    assert type(client) is nn.Sequential and list(dict(client.named_children())) == [
        "conv1",
        "conv2",
    ]
    assert client.conv1 is model.conv1 and cut_names(model) == ["conv1", "conv2", "fc1"]
    with pytest.raises(CutError, match="unknown cut 'conv7' for this model; choose one of"):
        split(model, "conv7")
    # a module path inside a block goes through fx and still composes exactly
    x = torch.rand(3, 1, 8, 8)
    client, server = split(model, "conv2.1")
    torch.testing.assert_close(server(client(x)), model(x), rtol=0, atol=0)


def test_torchvision_models_are_fitted_to_the_data():
    model = build_model("torchvision:resnet18", input_shape=(1, 16, 16), n_classes=3)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 3
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 3)
    assert MODELS.get("torchvision:vgg11").default_cut == ""
    with pytest.raises(ConfigError, match=r"unknown torchvision classification model 'resnet1'; "):
        MODELS.get("torchvision:resnet1")
    with pytest.raises(ConfigError, match=r"takes images \(C, H, W\), the data have shape \(30,\)"):
        build_model("torchvision:resnet18", input_shape=(30,), n_classes=2)
    with pytest.raises(ConfigError, match=r"unknown option 'pretrained' .* weights=/path"):
        MODELS.get("torchvision:resnet18:pretrained")
    with pytest.raises(ConfigError, match=r"unknown model 'vgg'; choose one of: .*torchvision:"):
        MODELS.get("vgg")


def test_torchvision_weights_come_from_a_local_file_only(tmp_path):
    torch.manual_seed(1)
    saved = torchvision.models.resnet18()  # 3 channels, 1000 classes
    path = tmp_path / "r18.pth"
    torch.save(saved.state_dict(), path)
    model = build_model(
        f"torchvision:resnet18:weights={path}", input_shape=(1, 16, 16), n_classes=3
    )
    torch.testing.assert_close(model.layer1[0].conv1.weight, saved.layer1[0].conv1.weight)
    torch.testing.assert_close(model.bn1.running_var, saved.bn1.running_var)
    # refitted to 1 channel and 3 classes: those tensors keep their fresh initialisation
    assert model.conv1.weight.shape == (64, 1, 7, 7) and model.fc.weight.shape == (3, 512)

    with pytest.raises(ConfigError, match=r"weights file .*nope.pth does not exist"):
        MODELS.get(f"torchvision:resnet18:weights={tmp_path / 'nope.pth'}")
    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "hook": _Gate()}, evil)
    with pytest.raises(
        ConfigError, match=r"cannot read weights .*weights_only=True.*never unpickles"
    ):
        build_model(f"torchvision:resnet18:weights={evil}", input_shape=(3, 16, 16), n_classes=3)
    partial = tmp_path / "partial.pth"
    torch.save({"conv1.weight": saved.conv1.weight}, partial)
    with pytest.raises(ConfigError, match=r"lacks tensor 'bn1.weight'"):
        build_model(f"torchvision:resnet18:weights={partial}", input_shape=(3, 16, 16), n_classes=3)


def test_module_factories_and_their_errors():
    model = build_model(FACTORY, input_shape=(1, 8, 8), n_classes=3)
    assert type(model).__name__ == "Tiny" and cut_names(model) == [
        "stem",
        "block.conv1",
        "block.conv2",
        "block",
        "pool",
    ]
    for spec, message in [
        ("module:tests.nopeek._factory", r"must read module:<package.module:factory>"),
        ("module:no_such_pkg.nets:make", r"cannot import 'no_such_pkg.nets'"),
        ("module:tests.nopeek._factory:missing", r"has no function 'missing'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            MODELS.get(spec)
    with pytest.raises(ConfigError, match=r"returned a str, not an nn.Module"):
        build_model("module:tests.nopeek._factory:not_a_model", input_shape=(1, 8, 8), n_classes=3)
    with pytest.raises(ConfigError, match=r"has no default cut; pass --cut"):
        TrainConfig(model=FACTORY).resolved()
    with pytest.raises(ConfigError, match=r"no default cut; pass --cut, e.g. conv1, .*layer1"):
        TrainConfig(model="torchvision:resnet18").resolved()
