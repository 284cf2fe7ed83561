"""Compressed runs with real processes on 127.0.0.1: two ``nopeek party`` processes over
torch.distributed (gloo) and two over gRPC with mutual TLS give the in-process run's numbers bit
for bit (metrics and weights), and what crossed is the compressed form (every party's wire log
records the compressor and its payload's bytes)."""

from __future__ import annotations

import importlib.util
import math

import pytest

from nopeek.cli.main import main
from tests.nopeek._cluster import _Child, _port
from tests.nopeek._run_checks import _label_dir, _load, _metrics, _same_metrics, _same_weights

FLAGS = ["--dataset", "digits", "--epochs", "2", "--max-train", "200", "--dcor-samples", "32"]
FLAGS += ["--record-samples", "16", "--device", "cpu", "--quiet"]
RUNS = {  # name -> (transport, --compress): error feedback and random-k over torch.distributed
    "torch": ("torch", "forward=topk:0.1,backward=randk:0.5"),
    "grpc": ("grpc", "forward=int4,backward=fp16"),
}
PARTIES = ["client", "server"]
D = 32 * 4 * 4


def _payload(spec: str, n: int) -> int:
    name, _, ratio = spec.partition(":")
    if name in ("topk", "randk"):
        return n * math.ceil(float(ratio) * D) * 8
    return {"int4": n * (5 + D // 2), "fp16": n * D * 2}[name]


def _children(root, name, pki) -> list[_Child]:
    transport, compress = RUNS[name]
    common = ["-m", "nopeek.cli.main", "party", *FLAGS, "--compress", compress]
    common += ["--timeout", "120", "--out", root / name]
    if transport == "torch":
        port = _port()
        return [
            _Child(
                [*common, "--rank", r, "--world-size", 2, "--master-port", port],
                root / "logs",
                f"{name}.{r}",
            )  # fmt: skip
            for r in range(2)
        ]
    ports = {p: _port() for p in PARTIES}
    peers = ",".join(f"{p}=127.0.0.1:{port}" for p, port in ports.items())
    return [
        _Child(
            [
                *common,
                "--transport",
                "grpc",
                "--peers",
                peers,
                "--ca",
                pki / "ca.pem",
                "--cert",
                pki / f"{p}.pem",
                "--key",
                pki / f"{p}.key",
            ],
            root / "logs",
            f"{name}.{p}",
        )  # fmt: skip
        for p in PARTIES
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of RUNS (all four processes started at once) and its in-process reference."""
    root = tmp_path_factory.mktemp("compressed")
    names, pki = list(RUNS), root / "pki"
    if all(importlib.util.find_spec(m) for m in ("grpc", "cryptography")):
        from nopeek.runtime.certs import make_certs

        make_certs(pki, PARTIES)
    else:  # the torch.distributed run only
        names = ["torch"]
    children = []
    try:
        for name in names:
            children += _children(root, name, pki)
        for name in names:
            ref = ["train", *FLAGS, "--compress", RUNS[name][1], "--out", str(root / f"{name}.ref")]
            assert main(ref) == 0
        for child in children:
            child.ok()
    finally:
        for child in children:
            child.kill()
    return root, names


@pytest.mark.parametrize("name", list(RUNS))
def test_a_compressed_distributed_run_equals_the_in_process_run(runs, name):
    root, names = runs
    if name not in names:
        pytest.skip("gRPC needs pip install 'nopeek[deploy]'")
    want = _metrics(root / f"{name}.ref" / "metrics.json")
    got = _metrics(_label_dir(root / name) / "metrics.json")
    _same_metrics(got, want)
    _same_weights(root / name, root / f"{name}.ref", PARTIES)
    backward = RUNS[name][1].split("backward=")[1]
    forward = RUNS[name][1].split(",")[0].removeprefix("forward=")
    assert got["bytes_client_to_server"] == _payload(forward, 200)
    assert got["bytes_server_to_client"] == _payload(backward, 200)
    for party in PARTIES:  # sent and received: the compressed payload, both ends
        records = _load(root / name / party / "checkpoint.pt")["wire_records"]
        train = [r for r in records if r[2] == "train"]  # (cut, direction, phase, ...)
        assert train and all(r[11] == (forward if r[10] == "activation" else backward)
                             for r in train)  # fmt: skip
        assert all(r[7] == _payload(r[11], r[5][0]) for r in train)
