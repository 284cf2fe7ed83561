"""gRPC with mutual TLS between parties, with real processes on 127.0.0.1 (issue 19).

Every run here is a real ``nopeek party --transport grpc`` process per party, each with its own
certificate from a job CA made by ``nopeek certs``: runs equal the in-process run bit for bit
(metrics and weights), a party whose certificate is from another CA or names another role is
refused before any tensor crosses, and a caller is filed under the role its certificate names.
"""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

pytest.importorskip("grpc")
pytest.importorskip("cryptography")

from nopeek.cli.main import main  # noqa: E402
from nopeek.errors import PeerError  # noqa: E402
from nopeek.runtime import wire  # noqa: E402
from nopeek.runtime.certs import make_certs  # noqa: E402
from nopeek.runtime.channel import WireLog  # noqa: E402
from nopeek.runtime.grpc_channel import GrpcChannel, Identity  # noqa: E402
from tests.nopeek._cluster import _Child, _port  # noqa: E402
from tests.nopeek._run_checks import (  # noqa: E402
    _label_dir,
    _metrics,
    _one_line,
    _same_metrics,
    _same_weights,
)

FLAGS = ["--epochs", "2", "--max-train", "200", "--dcor-samples", "32", "--record-samples", "16"]
FLAGS += ["--device", "cpu", "--quiet"]
RUNS = {  # name -> (flags, parties)
    "vanilla-digits": (["--dataset", "digits"], ["client", "server"]),
    "vertical-digits": (
        ["--dataset", "digits", "--topology", "vertical", "--clients", "2"],
        ["client0", "client1", "server"],
    ),
    "vertical-breast-cancer": (
        ["--dataset", "breast-cancer", "--topology", "vertical", "--clients", "2"],
        ["client0", "client1", "server"],
    ),
}


def _party(root, name, flags, role, peers, ca_dir, cert_dir=None, timeout=60) -> _Child:
    cert_dir = cert_dir or ca_dir
    args = ["-m", "nopeek.cli.main", "party", *FLAGS, *flags, "--transport", "grpc"]
    args += ["--peers", ",".join(f"{p}=127.0.0.1:{port}" for p, port in peers.items())]
    args += ["--ca", ca_dir / "ca.pem", "--cert", cert_dir / f"{role}.pem"]
    args += ["--key", cert_dir / f"{role}.key", "--timeout", timeout, "--out", root / name]
    return _Child(args, root / "logs", f"{name}.{role}")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The job's CA with every role, and a second CA (another job, or an attacker's)."""
    root = tmp_path_factory.mktemp("pki")
    make_certs(root / "job", ["client", "client0", "client1", "server"])
    make_certs(root / "other", ["client", "server"], job="another-ca")
    return root


@pytest.fixture(scope="module")
def runs(pki, tmp_path_factory):
    """Every run of RUNS over gRPC (all parties started at once), and its in-process reference."""
    root = tmp_path_factory.mktemp("grpc")
    children = []
    try:
        for name, (flags, parties) in RUNS.items():
            peers = {p: _port() for p in parties}
            children += [_party(root, name, flags, p, peers, pki / "job") for p in parties]
        for name, (flags, _) in RUNS.items():
            assert main(["train", *FLAGS, *flags, "--out", str(root / f"{name}.ref")]) == 0
        for child in children:
            child.ok()
    finally:
        for child in children:
            child.kill()
    return root


@pytest.mark.parametrize("name", list(RUNS))
def test_grpc_runs_equal_the_in_process_run(runs, name):
    """Same seed, same numbers: metrics and every party's weights, bit for bit."""
    want = _metrics(runs / f"{name}.ref" / "metrics.json")
    got = _metrics(_label_dir(runs / name) / "metrics.json")
    _same_metrics(got, want)
    _same_weights(runs / name, runs / f"{name}.ref", want["parties"])
    assert got["wire_bytes_total"] > got["payload_bytes_total"] > 0


@pytest.mark.parametrize("impostor", ["another CA", "another role"])
def test_a_server_that_cannot_prove_its_role_gets_nothing(pki, tmp_path, impostor):
    """The client dials the server's address, where an impostor listens: with a certificate
    from another CA, or the job CA's certificate for another role. TLS fails before the hello;
    the client ends with one line naming the server, and the impostor received nothing."""
    peers = {"client": _port(), "server": _port()}
    ca = pki / "job"
    identity = (
        Identity.read(pki / "other" / "ca.pem", pki / "other/server.pem", pki / "other/server.key")
        if impostor == "another CA"
        else Identity.read(ca / "ca.pem", ca / "client1.pem", ca / "client1.key")
    )
    fake = _channel("server", peers, identity)
    fake_thread = threading.Thread(target=_start_quietly, args=(fake,), daemon=True)
    fake_thread.start()
    client = _party(tmp_path, "run", ["--dataset", "digits"], "client", peers, ca, timeout=8)
    try:
        assert client.wait() == 2
        err = _one_line(client.err)
        assert err.startswith("error: client gave up on server sending stats: could not reach it")
        assert "certificate is not the job CA's for that role" in err
        assert all(box.empty() for box in fake._inbox.queues.values())
        assert not (tmp_path / "run" / "client" / "metrics.json").exists()
    finally:
        client.kill()
        fake.close()


def test_a_caller_is_filed_under_the_role_its_certificate_names(pki):
    """A process holding client1's certificate (a valid one of this job) that calls the server
    of a vanilla run cannot pose as its client: the server refuses it, and the client's queue
    stays empty."""
    ca = pki / "job"
    peers = {"client": _port(), "server": _port()}
    server = _channel(
        "server", peers, Identity.read(ca / "ca.pem", ca / "server.pem", ca / "server.key")
    )
    intruder_peers = {"client1": _port(), "server": peers["server"]}
    intruder = _channel(
        "client1",
        intruder_peers,
        Identity.read(ca / "ca.pem", ca / "client1.pem", ca / "client1.key"),
    )
    threading.Thread(target=_start_quietly, args=(server,), daemon=True).start()
    try:
        with pytest.raises(PeerError, match="permission_denied: 'client1' is no party of this job"):
            intruder.start()
        assert server._inbox.queues["client"].empty()
    finally:
        intruder.close()
        server.close()


def test_a_second_process_on_a_partys_address_cannot_listen(pki):
    """gRPC sets SO_REUSEPORT by default: a second server of the same role bound the same
    address and silently shared its callers. Now it cannot listen, in one line naming it."""
    ca = pki / "job"
    peers = {"client": _port(), "server": _port()}
    identity = Identity.read(ca / "ca.pem", ca / "server.pem", ca / "server.key")
    first, second = _channel("server", peers, identity), _channel("server", peers, identity)
    threading.Thread(target=_start_quietly, args=(first,), daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        while first._server is None:  # it listens, then waits for its client's hello
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(
            PeerError,
            match=rf"^server cannot listen on 127.0.0.1:{peers['server']}: another process uses "
            r"that address \(is server of this job already running\?\)",
        ):
            second.start()
    finally:
        second.close()
        first.close()


def _channel(me: str, peers: dict[str, int], identity: Identity) -> GrpcChannel:
    return GrpcChannel(
        me=me,
        ranks={p: i for i, p in enumerate(peers)},
        addresses={p: f"127.0.0.1:{port}" for p, port in peers.items()},
        identity=identity,
        cuts=["conv2"],
        expect=lambda kind, cut, sender: ((4,), None),
        max_batch=8,
        max_message=wire.MAX_TEXT + 4096,
        timeout=6,
        log=WireLog(),
    )


def _start_quietly(channel: GrpcChannel) -> None:
    with contextlib.suppress(Exception):  # the impostor's own failure is not what is tested
        channel.start()


def test_certs_cli_writes_a_ca_and_a_certificate_per_role(tmp_path, capsys):
    from nopeek.runtime.certs import common_name

    assert main(["certs", "--parties", "client0,client1,server", "--out", str(tmp_path)]) == 0
    assert "wrote 8 files" in capsys.readouterr().out
    for role in ("client0", "client1", "server"):
        assert common_name((tmp_path / f"{role}.pem").read_bytes()) == role
        assert (tmp_path / f"{role}.key").stat().st_mode & 0o077 == 0
    assert main(["certs", "--parties", "hospital-a", "--out", str(tmp_path / "x")]) == 2
    assert "roles like server, client" in capsys.readouterr().err


def test_grpc_party_needs_its_tls_files(tmp_path, capsys):
    argv = ["party", "--transport", "grpc", "--peers", "client=127.0.0.1:1,server=127.0.0.1:2"]
    assert main(argv) == 2
    assert _one_line(capsys.readouterr().err) == "error: --transport grpc needs --ca, --cert, --key"
    assert main([*argv, "--ca", str(tmp_path / "no.pem"), "--cert", "x", "--key", "y"]) == 2
    assert "cannot read --ca" in capsys.readouterr().err
