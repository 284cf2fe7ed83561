"""SplitFed v1 one client after another: one client segment and one server copy live at a time.

The numbers are those of before (``test_scale.py``'s K = 3 golden values); here the structure:
at every step of a round at most one client segment and one server copy hold a private copy of
their state, and the storage behind all K client segments (and all K server copies) is at most
two segments' worth: the live one and the round's global state, shared copy-on-write.
"""

from __future__ import annotations

import torch

from nopeek.config import TrainConfig
from nopeek.runtime.segments import FlatSegment
from nopeek.training.assemble import assemble


def _config(clients: int) -> TrainConfig:
    return TrainConfig(
        dataset="digits", topology="splitfed", splitfed="v1", clients=clients, epochs=1,
        batch_size=32, max_train=300, device="cpu", seed=0, lr=5e-3, record_samples=0,
        dcor_samples=32,
    ).resolved()  # fmt: skip


def _state_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * 4 for t in module.state_dict().values())


def _storage(segments: list[torch.nn.Module]) -> int:
    """Bytes of distinct storage behind the segments' state tensors."""
    seen = {}
    for m in segments:
        for t in m.state_dict().values():
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def test_v1_keeps_one_client_segment_and_one_server_copy_live() -> None:
    torch.set_num_threads(1)
    runner = assemble(_config(6), device="cpu")
    clients = runner.strategy.clients
    server = runner.parties["server"]
    copies = [f"server{k}" for k in range(len(clients))]
    p_client = _state_bytes(runner.parties["client0"].segments["client0"])
    p_server = _state_bytes(server.segments["server0"])

    def flats() -> tuple[list[FlatSegment], list[FlatSegment]]:
        cs = [runner.parties[c].flat_segment(c) for c in clients]
        ss = [server.flat_segment(s) for s in copies]
        assert all(s is not None for s in cs + ss)
        return cs, ss  # type: ignore[return-value]

    for epoch in range(2):
        owned, stored = [], []
        for step in runner.strategy.epoch(runner.runtime, 32, epoch):
            for p in step.parties:
                runner.parties[p].zero_grad()
            runner.runtime.step(step.batch, train=True, nodes=step.nodes)
            for p in step.parties:
                runner.parties[p].step_optimizer()
            cs, ss = flats()
            owned.append((sum(s.owned for s in cs), sum(s.owned for s in ss)))
            stored.append((_storage([s.module for s in cs]), _storage([s.module for s in ss])))
        assert set(owned) == {(1, 1)}  # exactly one live client segment and server copy
        assert max(c for c, _ in stored) == 2 * p_client  # live + the round's global state
        assert max(s for _, s in stored) == 2 * p_server
        cs, ss = flats()  # between rounds: one buffer each, K held segments
        assert not any(s.owned for s in cs + ss)
        assert _storage([s.module for s in cs]) == p_client
        assert _storage([s.module for s in ss]) == p_server
        assert all(runner.parties[c].held == [c] for c in clients)
        assert server.held == copies


def test_a_shared_state_is_copied_before_it_is_written() -> None:
    a = FlatSegment.adopt(torch.nn.Linear(3, 2))
    b = FlatSegment.adopt(torch.nn.Linear(3, 2))
    assert a is not None and b is not None
    a.share(a.flat)
    b.share(a.flat)
    assert torch.equal(b.module.weight, a.module.weight)
    b.own()
    with torch.no_grad():
        b.module.weight.add_(1.0)
    assert not torch.equal(b.module.weight, a.module.weight)  # a's state untouched
    b.disown()
    assert torch.equal(b.module.weight, a.module.weight) and not b.owned
    b.load(torch.arange(8.0))  # a load into a shared state gets its own buffer
    assert b.owned and not torch.equal(a.flat, b.flat) and b.module.bias.tolist() == [6.0, 7.0]
