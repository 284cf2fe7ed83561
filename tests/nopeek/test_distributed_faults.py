"""Distributed runs that fail, with real processes on 127.0.0.1: a party that never starts,
is killed, stalls or fails; parties that disagree on what they run; a real receiver refusing
bad headers before any allocation. The runs are started with the others by the ``cluster``
fixture (``_distributed_plan.py``); what each checks is in test_distributed.py's docstring.
"""

from __future__ import annotations

import datetime
import json
import math
import signal

import pytest
import torch
import torch.distributed as dist

from nopeek.errors import ChannelError
from nopeek.runtime import wire
from nopeek.runtime.channel import ACTIVATION, Message
from tests.nopeek._cluster import (
    SIGNALLED,
)
from tests.nopeek._distributed_plan import (
    STALL_TIMEOUT,
)
from tests.nopeek._run_checks import (
    _one_line,
)
from tests.nopeek._wire_helpers import BAD_HEADERS, HEADER_BYTES


# --- 3. a party that never starts, dies, stalls or fails --------------------------------------
@pytest.mark.parametrize("case, rank", [("lone-client", 0), ("lone-server", 1)])
def test_a_party_that_never_starts_ends_the_other_within_the_deadline(cluster, case, rank):
    """Alone at the meeting point (rank 0 hosts it, rank 1 connects to it), --timeout 5."""
    job = cluster.job(case, rank)
    assert job["code"] == 2
    err = _one_line(job["err"])
    me = case.removeprefix("lone-")
    other = {"client": "server", "server": "client"}[me]
    assert err.startswith(f"error: {me} could not meet {other} at 127.0.0.1:")
    assert "within 5 s" in err and "--master-port" in err
    assert job["seconds"] < 30  # gloo's own default would wait 30 minutes


def test_a_killed_party_ends_the_other_naming_it(cluster):
    assert cluster.drivers[SIGNALLED["killed"][0]].wait() == -signal.SIGKILL
    job = cluster.job("killed", 1)
    assert job["code"] == 2
    err = _one_line(job["err"])
    assert err.startswith("error: server gave up on client (rank 0) ")
    assert "its connection closed" in err
    assert job["ended"] - cluster.signalled["killed"] < 60


def test_a_stalled_party_ends_the_other_at_the_deadline(cluster):
    job = cluster.job("stalled", 1)
    assert job["code"] == 2
    err = _one_line(job["err"])
    assert err.startswith("error: server gave up on client (rank 0) ")
    assert f"timed out after at most {STALL_TIMEOUT} s" in err
    # the deadline plus the 3 s its error message may wait; not gloo's 30 minutes
    assert job["ended"] - cluster.signalled["stalled"] < 60


def test_an_error_in_one_party_is_sent_to_the_other(cluster):
    client, server = cluster.job("client-error", 0), cluster.job("client-error", 1)
    assert client["code"] == server["code"] == 2
    assert _one_line(client["err"]).startswith("error: training diverged at epoch 1, step 2")
    err = _one_line(server["err"])
    assert err.startswith("error: client stopped: client: training diverged at epoch 1, step 2")


def test_an_error_in_the_server_reaches_a_sending_client(cluster):
    """The client is blocked sending its next activation while the server fails: the server
    reads and drops that message so that the client gets to read the error."""
    client, server = cluster.job("server-error", 0), cluster.job("server-error", 1)
    assert client["code"] == server["code"] == 2
    assert _one_line(server["err"]).startswith("error: training diverged at epoch 1, step 2")
    assert _one_line(client["err"]).startswith("error: server stopped: server: training diverged")


@pytest.mark.parametrize(
    "case, field",
    [
        ("seed-mismatch", "seed (client 0, server 1)"),
        ("alpha-mismatch", "alpha (client 0.0, server 3.0)"),
        ("defense-mismatch", "defenses (client [], server [cut-noise:gaussian,sigma=0.5,clip=1])"),
        ("epochs-mismatch", "epochs (client 2, server 3)"),
        ("mismatch", "batch_size (client 32, server 16)"),
        ("resume-vs-overwrite", "start (client resume, server fresh)"),
    ],
)
def test_parties_that_disagree_stop_before_training_naming_the_field(cluster, case, field):
    """The label party compares every party's settings before the first tensor and stops
    all of them with one line naming each differing field and both values (before, a seed
    mismatch trained on mispaired labels and exited 0)."""
    client, server = cluster.job(case, 0), cluster.job(case, 1)
    assert client["code"] == server["code"] == 2
    why = "the parties' settings differ: "
    assert _one_line(server["err"]).startswith(f"error: {why}")
    assert field in _one_line(server["err"])
    assert _one_line(client["err"]).startswith(f"error: server stopped: server: {why}")
    assert field in _one_line(client["err"])
    assert not (cluster.root / case / "server" / "metrics.json").exists()


def test_every_party_of_a_three_party_run_learns_why_it_stopped(cluster):
    """client0 diverges: the server reads its error and passes it on to client1, which never
    talks to client0 (a wait that ran into --timeout would say "gave up")."""
    codes = [cluster.job("vertical-error", r)["code"] for r in range(3)]
    assert codes == [2, 2, 2]
    errors = [_one_line(cluster.job("vertical-error", r)["err"]) for r in range(3)]
    assert errors[0].startswith("error: training diverged at epoch 1")
    assert errors[2].startswith("error: client0 stopped: client0: training diverged")
    assert errors[1].startswith("error: server stopped: server: client0 stopped: client0:")


def test_the_survivor_of_a_dead_peer_keeps_its_checkpoint_for_resume(cluster):
    assert cluster.job("killed", 1)["code"] == 2
    assert (cluster.root / "killed" / "client" / "checkpoint.pt").is_file()
    assert (cluster.root / "killed" / "server" / "checkpoint.pt").is_file()


# --- 4. a real receiver (this process): bad headers refused before any allocation ------------
def test_receiver_rejects_bad_headers_before_allocating(cluster, monkeypatch):
    """A real pair: the receiver refuses a huge shape, a wrong dtype, an id-count mismatch and
    an oversized text naming the sender and the field, having allocated only the header; a
    peer's error arrives as that peer's words; silence ends at the deadline. The sender's byte
    counters are exact (a 128-byte header a message, payload = tensor + ids + text bytes)."""
    from nopeek.errors import PeerError
    from nopeek.runtime.distributed import TorchDistributedChannel

    def no_pickles(*args, **kwargs):
        raise AssertionError("a pickled object was about to cross the wire")

    for name in ("send_object_list", "recv_object_list", "broadcast_object_list"):
        monkeypatch.setattr(dist, name, no_pickles)
    sizes: list[int] = []
    empty = torch.empty

    def recording_empty(*shape, **kwargs):
        shape = shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape
        sizes.append(math.prod(shape))
        return empty(*shape, **kwargs)

    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{cluster.sender_port}",
        rank=1,
        world_size=2,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        ch = TorchDistributedChannel(
            me="server",
            ranks={"client": 0, "server": 1},
            cuts=["conv2"],
            expect=lambda kind, cut, sender: ((16, 4, 4), None),
            max_batch=64,
            timeout=3,
        )

        def act(step: int) -> Message:
            sizes.clear()
            return ch.recv(
                sender="client", receiver="server", kind=ACTIVATION, cut="conv2", step=step
            )

        monkeypatch.setattr(torch, "empty", recording_empty)
        msg = act(0)
        assert sizes == [wire.HEADER_LEN, 4 * 16 * 4 * 4, 4]
        z = torch.arange(4 * 16 * 16, dtype=torch.float32).reshape(4, 16, 4, 4)
        assert torch.equal(msg.tensor, z) and msg.ids.tolist() == [7, 1, 5, 3]
        assert (msg.kind, msg.sender, msg.step) == (ACTIVATION, "client", 0)
        assert ch.recv_text("client") == {"steps": [[0, 4, [0.5]]]}
        for step, (what, (_, match)) in enumerate(BAD_HEADERS.items(), start=1):
            with pytest.raises(ChannelError, match=match):
                act(step)
            assert sizes == [wire.HEADER_LEN], what  # only the header was allocated
        with pytest.raises(PeerError, match=r"^client stopped: client: boom$"):
            act(5)
        assert sizes == [wire.HEADER_LEN, len("client: boom")]
        silence = r"^server gave up on client \(rank 0\) waiting for an activation at cut 'conv2'"
        with pytest.raises(PeerError, match=silence + r" \(step 6\): timed out after at most 3 s"):
            act(6)
        monkeypatch.setattr(torch, "empty", empty)
        assert cluster.drivers[2].wait() == 0, cluster.drivers[2].err  # the sender left
    finally:
        dist.destroy_process_group()
    sender = cluster.job("sender", 0)
    assert sender["code"] == 0, sender["err"]
    header, payload, header_after, payload_after = json.loads(
        (cluster.logs / "sender-counts.json").read_text()
    )
    text = json.dumps({"steps": [[0, 4, [0.5]]]})
    assert header == 2 * HEADER_BYTES
    assert payload == z.numel() * 4 + 4 * 8 + len(text.encode())
    # the hand-made headers went around the channel; the error message went through it
    assert (header_after, payload_after) == (3 * HEADER_BYTES, payload + len("client: boom"))
