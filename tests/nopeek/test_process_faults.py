"""Faults that take a second real process (issue 19): a rank another process already holds, a
gloo transport this build lacks, a job secret one party lacks, two writers of one ``--out``;
and a transport whose package is not installed.

Each case is one line and exit status 2, before anything reaches a peer. The processes are
``tests/nopeek/_cluster.py``'s children, started per test (the big cluster fixture of
``test_distributed.py`` is not slowed down by them).
"""

from __future__ import annotations

import signal
import sys
import time

import pytest

from nopeek.cli.main import main
from tests.nopeek._cluster import WAIT, _Child, _port
from tests.nopeek._run_checks import _one_line

FLAGS = ["--dataset", "digits", "--epochs", "1", "--max-train", "200", "--dcor-samples", "32"]
FLAGS += ["--device", "cpu", "--quiet"]
SECRET = "0123456789abcdef0123456789abcdef"

# A process that joins a run as rank ARGS[1] of 2 at port ARGS[0] and holds it until the file
# ARGS[2]/release exists (it says it joined with ARGS[2]/joined<rank>)
HOLD = """
import sys, time
from pathlib import Path
import torch
from nopeek.runtime.launch import PartyLaunch
port, rank, folder = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
launch = PartyLaunch(rank, 2, "127.0.0.1", port, timeout=120)
launch.join(f"rank{rank}", torch.device("cpu"))
(folder / f"joined{rank}").touch()
deadline = time.monotonic() + 120
while not (folder / "release").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
launch.close(None)
"""


def _wait_for(path, child: _Child, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        assert child.proc.poll() is None, f"{child.name} ended before {what}:\n{child.err}"
        assert time.monotonic() < deadline, f"{child.name}: no {what} within {WAIT} s"
        time.sleep(0.02)


def _party(tmp_path, name: str, rank: int, port: int, *extra) -> _Child:
    args = ["-m", "nopeek.cli.main", "party", "--rank", rank, "--world-size", 2]
    args += ["--master-port", port, "--timeout", 60, *FLAGS, *extra]
    return _Child([*args, "--out", tmp_path / name], tmp_path / "logs", f"{name}.{rank}")


def test_a_second_process_with_a_taken_rank_is_refused_naming_it(tmp_path, capsys):
    """Ranks 0 and 1 have met; a third process started as rank 1 (today it waited out
    --timeout on a group that never forms, then said "could not meet") is refused at once,
    and one started as rank 0 finds the meeting point's port in use."""
    port = _port()
    holders = [_Child(["-c", HOLD, port, r, tmp_path], tmp_path, f"holder{r}") for r in (0, 1)]
    try:
        for rank, holder in enumerate(holders):
            _wait_for(tmp_path / f"joined{rank}", holder, "joining")
        for rank in (1, 0):
            argv = ["party", "--rank", str(rank), "--world-size", "2", "--master-port", str(port)]
            began = time.monotonic()
            assert main([*argv, "--timeout", "60", *FLAGS, "--out", str(tmp_path / "x")]) == 2
            assert time.monotonic() - began < 30  # not the --timeout
            err = _one_line(capsys.readouterr().err)
            if rank == 1:
                assert err.startswith(
                    f"error: rank 1 is already taken: another process joined 127.0.0.1:{port} "
                    "as rank 1; start each rank once (check --rank)"
                ), err
            else:
                assert err.startswith(
                    f"error: rank 0 cannot host the meeting point 127.0.0.1:{port}: the port is "
                    "in use (rank 0 of this run is already taken"
                ), err
        (tmp_path / "release").touch()
        for holder in holders:  # the run the intruders tried to join was not disturbed
            holder.ok()
    finally:
        for holder in holders:
            holder.kill()
    assert not (tmp_path / "x").exists()


def test_a_gloo_transport_this_build_lacks_is_named(tmp_path, monkeypatch):
    """GLOO_DEVICE_TRANSPORT=TCP_TLS on a torch whose gloo has no TLS: one line naming the
    variable at once (it used to be "could not meet" after --timeout)."""
    monkeypatch.setenv("GLOO_DEVICE_TRANSPORT", "TCP_TLS")  # gloo reads it when torch loads
    child = _party(tmp_path, "run", 0, _port(), "--timeout", 5)
    assert child.wait() == 2
    err = _one_line(child.err)
    if "could not meet" in err:
        pytest.skip("this torch's gloo has the TCP_TLS transport")
    assert err.startswith(
        "error: GLOO_DEVICE_TRANSPORT=TCP_TLS: this torch build's gloo cannot make that transport "
        "(unsupported gloo device); unset it, and for encryption between institutions use "
        "--transport grpc"
    ), err
    assert not (tmp_path / "run").exists()


def test_a_job_secret_one_party_lacks_stops_both_before_any_tensor(tmp_path):
    """A client with the job secret against a server without it refuses the server, having sent
    it nothing but its random challenge; a server with the secret refuses a client that does not
    answer its challenge. Every party exits 2 with one line, and nothing trains."""
    secret = tmp_path / "job.secret"
    secret.write_text(SECRET + "\n")

    def pair(run: str, knows: str) -> dict[tuple[str, str], _Child]:
        port = _port()
        return {
            (run, party): _party(tmp_path, run, rank, port, *(
                ["--job-secret-file", secret] if party == knows else []
            ))
            for rank, party in enumerate(("client", "server"))
        }  # fmt: skip

    children = pair("client-knows", "client") | pair("server-knows", "server")
    try:
        codes = {key: child.wait() for key, child in children.items()}
        errors = {key: _one_line(child.err) for key, child in children.items()}
    finally:
        for child in children.values():
            child.kill()
    assert set(codes.values()) == {2}, errors
    unsure = errors[("client-knows", "client")]
    assert unsure.startswith("error: server could not prove the job secret (server stop"), unsure
    assert "this party sent it nothing but a random challenge" in unsure
    # what the server got from the client was a challenge, nothing else
    assert errors[("client-knows", "server")] == (
        "error: client asks for the job secret, which this party was not given; give every party "
        "the same --job-secret-file"
    )
    refused = "client did not answer the job-secret challenge; give every party the same"
    assert errors[("server-knows", "server")].startswith(f"error: {refused}")
    assert errors[("server-knows", "client")].startswith(
        f"error: server stopped: server: {refused}"
    )
    assert not list(tmp_path.glob("*-knows/*/checkpoint.pt"))  # nothing trained


def test_two_overwrites_of_one_out_cannot_both_succeed(tmp_path):
    """Two `nopeek train --overwrite --out R` at once: the second is refused naming the first's
    pid (before, both staged a run and both swapped theirs in, reporting success), and the
    first finishes undisturbed."""
    out = tmp_path / "run"
    assert main(["train", *FLAGS, "--out", str(out)]) == 0
    argv = ["-m", "nopeek.cli.main", "train", *FLAGS, "--epochs", 3, "--overwrite", "--out", out]
    first = _Child(argv, tmp_path / "logs", "first")
    lock = tmp_path / ".run.nopeek-lock"
    deadline = time.monotonic() + WAIT
    try:
        while not (lock.exists() and lock.read_text() == f"{first.proc.pid}\n"):
            assert first.proc.poll() is None, f"the first ended before it locked:\n{first.err}"
            assert time.monotonic() < deadline, f"no lock within {WAIT} s"
            time.sleep(0.005)
        first.proc.send_signal(signal.SIGSTOP)  # holding the lock, whatever it does meanwhile
        second = _Child(argv, tmp_path / "logs", "second")
        assert second.wait() == 2
        assert _one_line(second.err) == (
            f"error: --out {out} is being written by another nopeek process (pid "
            f"{first.proc.pid}): two writers would replace each other's work; wait for it to "
            "finish, or choose another --out"
        )
        first.proc.send_signal(signal.SIGCONT)
        first.ok()
    finally:
        first.proc.send_signal(signal.SIGCONT)
        first.kill()
    assert '"epochs": 3' in (out / "config.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "run"]  # no lock, no staging


@pytest.mark.parametrize(
    "argv, package",
    [
        (["party", "--transport", "grpc", "--peers", "client=127.0.0.1:1,server=127.0.0.1:2"],
         "grpc"),
        (["certs", "--parties", "client,server"], "cryptography"),
    ],
)  # fmt: skip
def test_a_transport_package_not_installed_names_the_extra(argv, package, tmp_path, monkeypatch,
                                                           capsys):  # fmt: skip
    """Without grpcio (or cryptography for `nopeek certs`): one line naming the extra."""
    monkeypatch.setitem(sys.modules, package, None)  # `import grpc` raises ModuleNotFoundError
    pem = tmp_path / "x.pem"
    pem.write_text("not read this far")
    files = ["--ca", str(pem), "--cert", str(pem), "--key", str(pem)] if package == "grpc" else []
    assert main([*argv, *files, "--out", str(tmp_path / "out")]) == 2
    err = _one_line(capsys.readouterr().err)
    assert err.endswith("install it with pip install 'nopeek[deploy]'"), err
    assert not (tmp_path / "out").exists()
