"""CutHook.penalty: a loss term the sender adds on its own message, backpropagated into it."""

import copy

import torch
import torch.nn.functional as F

from nopeek.hooks import CutHook
from nopeek.models import build_model
from nopeek.runtime import InProcessRuntime
from nopeek.topology import vanilla


class _Pull(CutHook):
    """Penalty c * ||z||^2 on the message, recording who called it with what."""

    name = "pull"

    def __init__(self, c):
        self.c, self.calls = c, []

    def penalty(self, cut, x, z):
        self.calls.append((cut, x.detach().clone()))
        return self.c * z.pow(2).sum()


def _batch():
    gen = torch.Generator().manual_seed(0)
    return {"x": torch.randn(6, 4, generator=gen), "y": torch.tensor([0, 1, 0, 1, 1, 0]),
            "ids": torch.arange(6)}  # fmt: skip


def test_the_penalty_joins_the_senders_loss_and_gradient():
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(4,), n_classes=2)
    reference = copy.deepcopy(model)
    hook = _Pull(0.05)
    rt = InProcessRuntime(vanilla(model, ["fc1"]), hooks=[hook])  # every party holds the hook
    batch = _batch()
    out = rt.step(batch, train=True)
    client = reference[: list(dict(reference.named_children())).index("fc1") + 1]
    z = client(batch["x"])
    loss = F.cross_entropy(reference(batch["x"]), batch["y"]) + 0.05 * z.pow(2).sum()
    loss.backward()
    assert abs(out.losses["pull_client"] - float(0.05 * z.pow(2).sum())) < 1e-6
    got = [p.grad for m in rt.parties["client"].modules for p in m.parameters()]
    want = [p.grad for p in client.parameters()]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    # called once, by the client only (the server's node is not fed by its own raw inputs)
    assert len(hook.calls) == 1 and hook.calls[0][0] == "fc1"
    assert torch.equal(hook.calls[0][1], batch["x"])
    rt.step(batch, train=False)
    assert len(hook.calls) == 1  # never at evaluation
