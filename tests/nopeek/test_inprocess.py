"""The in-process runtime, channel and topologies: exact gradients, hard cuts, honest wire log."""

import pytest
import torch
from torch import nn

from nopeek import (
    ChannelError,
    ConfigError,
    CutError,
    InProcessChannel,
    Topology,
    build_model,
)
from nopeek.runtime import InProcessRuntime
from nopeek.topology import Node, Objective, u_shaped, vanilla


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model("digits-cnn", input_shape=(1, 8, 8), n_classes=10)


def _batch(n=6):
    g = torch.Generator().manual_seed(1)
    return {
        "x": torch.rand(n, 1, 8, 8, generator=g),
        "y": torch.randint(0, 10, (n,), generator=g),
        "ids": torch.arange(n),
    }


@pytest.mark.parametrize(
    "build, cuts",
    [(vanilla, ["conv2"]), (vanilla, ["conv1", "fc1"]), (u_shaped, ["conv2", "fc1"])],
)
def test_split_gradients_equal_the_monolithic_model(build, cuts):
    split_model, whole = _model(), _model()
    batch = _batch()
    InProcessRuntime(build(split_model, cuts), InProcessChannel()).step(batch, train=True)
    nn.functional.cross_entropy(whole(batch["x"]), batch["y"]).backward()
    for a, b in zip(split_model.parameters(), whole.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-6)


def test_wire_log_carries_only_cut_tensors_and_server_never_sees_inputs():
    model = _model()
    topo = vanilla(model, ["conv2"])
    seen = []
    topo.node("server").module.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape))
    channel = InProcessChannel()
    engine = InProcessRuntime(topo, channel)
    batch = _batch(6)
    assert set(engine.views(batch)["server"]) == {"y", "ids"}
    engine.step(batch, train=True)
    assert [(r.direction, r.shape) for r in channel.log.records] == [
        ("forward", (6, 32, 4, 4)),
        ("backward", (6, 32, 4, 4)),
    ]
    assert all(s[1:] != batch["x"].shape[1:] for s in seen)
    assert channel.log.records[0].nbytes == 6 * 32 * 4 * 4 * 4


def test_channel_refuses_tensors_with_autograd_history():
    z = torch.ones(2, 3, requires_grad=True) * 2
    with pytest.raises(ChannelError, match="autograd history"):
        InProcessChannel().send(z, cut="c", direction="forward")


def test_channel_delivers_a_copy_and_captures_with_ids_when_asked():
    ch = InProcessChannel()
    ch.log.capture = lambda rec: rec.direction == "backward"
    z = torch.ones(3, 2)
    out = ch.send(z, cut="c", direction="forward", ids=torch.tensor([4, 5, 6]))
    out.add_(1)
    assert torch.equal(z, torch.ones(3, 2))
    ch.send(z, cut="c", direction="backward", ids=torch.tensor([4, 5, 6]))
    (cap,) = ch.log.captures
    assert cap.record.direction == "backward" and cap.ids.tolist() == [4, 5, 6]


def test_a_party_may_not_read_data_it_does_not_hold():
    seg = nn.Identity()
    with pytest.raises(ConfigError, match="may only read its own data"):
        Topology(
            "bad",
            [Node("server", "server", seg, ("data:x",))],
            [Objective("server", "y", "server")],
            owners={"x": "client", "y": "server"},
        )


def test_cut_errors_name_the_valid_cuts():
    with pytest.raises(CutError, match="choose one of: conv1, conv2, fc1"):
        vanilla(_model(), ["conv9"])
    with pytest.raises(CutError, match="in model order"):
        vanilla(_model(), ["fc1", "conv1"])
    with pytest.raises(CutError, match="two cuts"):
        u_shaped(_model(), ["conv2"])


def test_u_shaped_keeps_labels_at_the_client():
    topo = u_shaped(_model(), ["conv2", "fc1"])
    engine = InProcessRuntime(topo, InProcessChannel())
    views = engine.views(_batch())
    assert set(views["client"]) == {"x", "y", "ids"} and set(views["server"]) == {"ids"}
    assert topo.cuts() == ["conv2", "fc1"]
