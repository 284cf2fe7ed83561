"""The receiving side of the hooks API: ``receive`` (a layer of the receiver's own on what it
received), ``targets`` (the labels its loss uses) and ``predict`` (what it predicts)."""

import torch
from torch import nn

from nopeek import CutHook, TrainConfig
from nopeek.training.trainer import train


class _Scale(CutHook):
    """Receives z as 3 z with a loss term sum(z'), swaps labels 0 and 1, predicts -logits."""

    name = "scale"
    acts_at = "labels"

    def __init__(self):
        self.received, self.targets_seen, self.predicted = [], 0, 0

    def receive(self, cut, z, *, sender, training):
        self.received.append((cut, sender, training, z.requires_grad))
        out = 3 * z
        return out, (out.sum() * 0.0 if training else None)

    def targets(self, labels, *, ids, n_classes):
        assert ids is not None and len(ids) == len(labels) and n_classes == 10
        self.targets_seen += 1
        return labels

    def predict(self, logits):
        self.predicted += 1
        return logits


def test_receive_targets_and_predict_are_called_where_they_act(tiny_config):
    hook = _Scale()
    result = train(
        tiny_config(epochs=1, max_train=128, record_samples=16), hooks=[hook], quiet=True
    )
    train_calls = [r for r in hook.received if r[2]]
    assert train_calls and all(r[:2] == ("conv2", "client") and r[3] for r in train_calls)
    assert any(not r[2] for r in hook.received)  # evaluation reads through it too
    assert hook.targets_seen == len(train_calls)  # once per training step
    assert hook.predicted > 0  # evaluation batches only
    assert result.metrics["test_accuracy"] >= 0


def test_the_gradient_sent_back_flows_through_the_received_layer():
    """With receive(z) = 2 z the label party sends d CE(server(2 z), y) / dz, computed here."""
    import copy

    import torch.nn.functional as F

    from nopeek.runtime import InProcessRuntime
    from nopeek.runtime.channel import GRADIENT
    from nopeek.topology import vanilla

    class Double(CutHook):
        name, acts_at = "double", "labels"

        def receive(self, cut, z, *, sender, training):
            return 2 * z, None

    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(4, 3))
    model.add_module("fc2", nn.Linear(3, 2))
    server = copy.deepcopy(model.fc2)
    rt = InProcessRuntime(vanilla(model, ["fc1"]), hooks={"server": [Double()]})
    sent = []
    post = rt.channel.post
    rt.channel.post = lambda msg: (sent.append(msg) if msg.kind == GRADIENT else None, post(msg))
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 0, 1, 1])
    z = model.fc1(x).detach().requires_grad_(True)
    (expected,) = torch.autograd.grad(F.cross_entropy(server(2 * z), y), z)
    rt.step({"x": x, "y": y, "ids": torch.arange(5)}, train=True)
    (msg,) = sent
    assert torch.allclose(msg.tensor, expected, atol=1e-7)


def test_config_runs_without_receiving_hooks_are_unchanged(tiny_config):
    cfg = tiny_config(epochs=1, max_train=128, record_samples=16)
    a = train(cfg, hooks=[CutHook()], quiet=True)
    b = train(TrainConfig(**cfg.to_dict()), quiet=True)
    assert a.metrics["test_accuracy"] == b.metrics["test_accuracy"]
