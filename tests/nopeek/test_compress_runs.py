"""Compressed training runs in one process: the wire log counts the analytic payload of every
message; what attacks observe is the decoded message (what the receiver saw); --resume carries
the error-feedback residual and the random-k generator; the CLI records the canonical spec and
refuses a bad one in one line; an attacker's queries are compressed as the run's messages."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from nopeek import Observations, load_dataset, train
from nopeek.cli.main import main
from nopeek.compress import parse_compressor
from nopeek.io import safe_torch_load

SMALL = {"max_train": 150, "dcor_samples": 32, "record_samples": 16, "epochs": 1}
D = 32 * 4 * 4  # digits-cnn's conv2 output, one sample


def _payload(spec: str, n: int, d: int = D) -> int:
    """Bytes of one message of ``n`` float32 samples of ``d`` values, written out by hand."""
    name, _, ratio = spec.partition(":")
    if name in ("topk", "randk"):
        return n * math.ceil(float(ratio) * d) * (4 + 4)
    return {"int8": n * (5 + d), "int4": n * (5 + (d + 1) // 2), "fp16": n * d * 2}[name]


@pytest.mark.parametrize(
    "forward, backward", [("topk:0.1", "int4"), ("randk:0.25", "int8"), ("int8", "fp16")]
)
def test_bytes_per_epoch_are_the_analytic_payloads(tiny_config, forward, backward):
    cfg = tiny_config(**SMALL, compress=f"forward={forward},backward={backward}")
    result = train(cfg, quiet=True)
    n = len(load_dataset("digits", seed=0, max_train=150).train)
    assert result.metrics["train_samples"] == n == 150
    m = result.metrics
    assert m["bytes_client_to_server"] == _payload(forward, n)
    assert m["bytes_server_to_client"] == _payload(backward, n)
    train_msgs = [r for r in result.wire.records if r.phase == "train"]
    assert {r.codec for r in train_msgs} == {forward, backward}
    for r in train_msgs:  # every message, also the last (smaller) batch
        spec = forward if r.kind == "activation" else backward
        assert r.nbytes == _payload(spec, r.shape[0]) and r.shape[1:] == (32, 4, 4)


def test_attacks_observe_the_decoded_messages(tiny_config, tmp_path):
    cfg = tiny_config(**SMALL, compress="forward=topk:0.05,backward=int4")
    train(cfg, tmp_path / "run", quiet=True)
    obs = Observations.load(tmp_path / "run" / "observations.pt")
    sent = obs.get(cut="conv2", direction="forward", phase="inference").tensor
    assert sent.shape[1:] == (32, 4, 4) and sent.dtype == torch.float32
    assert (sent.reshape(len(sent), -1) != 0).sum(dim=1).max() <= math.ceil(0.05 * D)
    grads = obs.get(cut="conv2", direction="backward", phase="train").tensor
    assert max(len(torch.unique(g)) for g in grads) <= 16  # int4: 16 levels a sample


def test_resume_of_a_compressed_run_gives_the_uninterrupted_weights(
    interrupt, tiny_config, tmp_path
):
    """Error feedback (top-k) and random-k's generator are in the checkpoint."""
    cfg = tiny_config(**(SMALL | {"epochs": 2}), compress="forward=topk:0.2,backward=randk:0.3")
    train(cfg, tmp_path / "full", quiet=True)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", quiet=True, hooks=[interrupt(at=1, steps=3)])
    train(cfg, tmp_path / "cut", resume=True, quiet=True, hooks=[interrupt(None)])
    full, cut = (safe_torch_load(tmp_path / r / "checkpoint.pt") for r in ("full", "cut"))
    for name, sds in full["parties"].items():
        for a, b in zip(sds, cut["parties"][name]):
            assert all(torch.equal(a[k], b[k]) for k in a)
    residual = full["compressors"]["client"]["activation"]["residual"]
    assert list(residual) == ["conv2>server"]
    assert "generator" in full["compressors"]["server"]["gradient"]


def test_cli_records_the_canonical_spec_and_refuses_a_bad_one(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--epochs", "1", "--max-train", "150", "--dcor-samples", "32", "--quiet"]
    assert (
        main([*argv, "--compress", "backward=int8, forward=topk:ratio=0.1", "--out", str(out)]) == 0
    )
    assert json.loads((out / "config.json").read_text())["compress"] == (
        "forward=topk:0.1,backward=int8"
    )
    assert main([*argv, "--compress", "forward=topk:2", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: topk keeps a fraction in (0, 1] of each sample, got 2.0; e.g. topk:0.1"]


def test_an_attackers_queries_are_compressed_like_the_runs_messages():
    from nopeek.attacks._sending import as_sent as _as_sent
    from nopeek.config import TrainConfig

    run = SimpleNamespace(config=TrainConfig(compress="forward=int4"), cut="conv2", run_dir=None)
    x = torch.randn(5, 32, 4, 4)
    query = _as_sent(run, lambda t: t, seed=0, sender=None)
    assert torch.equal(query(x), parse_compressor("int4").roundtrip(x))
    backward_only = SimpleNamespace(config=TrainConfig(compress="backward=int4"), cut="conv2")

    def identity(t):
        return t

    assert _as_sent(backward_only, identity, seed=0, sender=None) is identity


def test_parties_with_other_compressors_disagree_at_the_handshake():
    from nopeek.config import TrainConfig
    from nopeek.runtime.handshake import differences, fingerprint

    def settings(text):
        return fingerprint(TrainConfig(compress=text).resolved().to_dict(), resume=False)

    assert differences(
        settings("forward=topk:0.1"), settings("topk:ratio=0.1"), me="server", peer="client"
    ) == [  # fmt: skip
        "compress (client forward=topk:0.1,backward=topk:0.1, server forward=topk:0.1)"
    ]
    assert differences(settings("forward=topk:0.10"), settings("forward=topk:0.1"), me="s",
                       peer="c") == []  # fmt: skip
