"""The gRPC channel's streams (issue 19), with real gRPC + mutual TLS on 127.0.0.1.

A send returns once its message is queued on the long-lived stream to the peer, so these check
what one call a message used to give for free: what a party queued before it closed still
arrives, a receive waiting on a peer that closed, or died mid-stream, is one line naming it at
once (not at its deadline), and a stream that broke before its messages were delivered is
named when the channel closes.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("grpc")
pytest.importorskip("cryptography")

from nopeek.errors import PeerError  # noqa: E402
from nopeek.runtime import wire  # noqa: E402
from nopeek.runtime.certs import make_certs  # noqa: E402
from nopeek.runtime.channel import ACTIVATION, Message, WireLog  # noqa: E402
from nopeek.runtime.grpc_channel import GrpcChannel, Identity  # noqa: E402
from tests.nopeek._cluster import _port  # noqa: E402

TIMEOUT = 60  # every receive's deadline: the failures below must be named long before it
PROMPT = 10  # seconds within which they are


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    make_certs(root, ["client", "server"])
    return root


def channel(pki: Path, me: str, ports: dict[str, int]) -> GrpcChannel:
    """Party ``me`` of a two-party job on ``ports``: activations (N, 4) at cut 'conv2'."""
    return GrpcChannel(
        me=me,
        ranks={"client": 0, "server": 1},
        addresses={p: f"127.0.0.1:{port}" for p, port in ports.items()},
        identity=Identity.read(pki / "ca.pem", pki / f"{me}.pem", pki / f"{me}.key"),
        cuts=["conv2"],
        expect=lambda kind, cut, sender: ((4,), None),
        max_batch=8,
        max_message=wire.MAX_TEXT + 4096,
        timeout=TIMEOUT,
        log=WireLog(),
    )


def activation(step: int) -> Message:
    return Message(ACTIVATION, "conv2", "client", "server", step, torch.full((2, 4), step * 1.0),
                   torch.arange(2))  # fmt: skip


def receive(server: GrpcChannel, step: int) -> Message:
    return server.recv(sender="client", receiver="server", kind=ACTIVATION, cut="conv2", step=step)


def started(*channels: GrpcChannel) -> None:
    """Start the channels together (each waits for the others' hellos)."""
    threads = [threading.Thread(target=c.start, daemon=True) for c in channels]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=TIMEOUT)
    assert all(c._outboxes for c in channels), "a channel did not start"


def test_what_a_party_queued_before_it_closed_arrives_then_its_end_is_named(pki):
    ports = {"client": _port(), "server": _port()}
    client, server = channel(pki, "client", ports), channel(pki, "server", ports)
    started(client, server)
    try:
        for step in range(3):
            client.post(activation(step))  # returns once queued
        client.close()  # delivers what is queued first
        for step in range(3):
            assert torch.equal(receive(server, step).tensor, activation(step).tensor)
        began = time.monotonic()
        with pytest.raises(
            PeerError,
            match=r"^server gave up on client waiting for an activation at cut 'conv2' \(step 3\): "
            r"it closed its connection \(it finished or stopped",
        ):
            receive(server, 3)
        assert time.monotonic() - began < PROMPT
    finally:
        server.close()  # its stream to the client broke as the client stopped: no error


CHILD = """
import sys, time
from pathlib import Path
from tests.nopeek.test_grpc_streams import activation, channel
ports = {"client": int(sys.argv[2]), "server": int(sys.argv[3])}
client = channel(Path(sys.argv[1]), "client", ports)
client.start()
client.post(activation(0))
time.sleep(600)
"""


def test_a_peer_that_dies_mid_stream_is_named_at_once_and_at_close(pki):
    ports = {"client": _port(), "server": _port()}
    server = channel(pki, "server", ports)
    starting = threading.Thread(target=server.start, daemon=True)
    starting.start()
    args = [str(pki), str(ports["client"]), str(ports["server"])]
    child = subprocess.Popen([sys.executable, "-c", CHILD, *args], stderr=subprocess.DEVNULL)
    try:
        starting.join(timeout=TIMEOUT)
        assert torch.equal(receive(server, 0).tensor, activation(0).tensor)
        child.kill()
        child.wait(timeout=PROMPT)
        began = time.monotonic()
        with pytest.raises(
            PeerError,
            match=r"^server gave up on client waiting for an activation .*(connection|stream)",
        ):
            receive(server, 1)
        assert time.monotonic() - began < PROMPT
        with pytest.raises(PeerError, match=r"^server gave up on client delivering its last"):
            server.close()
    finally:
        child.kill()
        server.close()
