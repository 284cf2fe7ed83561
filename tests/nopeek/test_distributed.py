"""Distributed runs with real processes on 127.0.0.1: every party its own process, over gloo.

References are independent of the distributed runtime: the in-process run of the same flags
(``nopeek train`` in this process, one thread, as the children) for metrics and final weights;
the tensors actually handed to ``torch.distributed.isend`` (logged by a wrapper in the children)
and the parties' own wire logs for the byte counts; hand-made headers for the validation.

Start-up (importing torch) is most of a child's life, so all children start at once (the
``cluster`` fixture: three drivers and torchrun) and each driver runs one party of many runs in
turn (``DRIVER``: one ``nopeek party`` command line after the other through
:func:`nopeek.cli.main.main`, each with its own stderr, exit status and duration, as if it were
a process of its own); a party that gets killed or stopped is the last job of its driver. The
failure cases end within their deadlines (``--timeout``), and every wait of this module has one
too, so a hang fails the test instead of hanging CI.
The drivers, the sender and the waits are in ``_cluster.py``; the header checks that need no
process are in ``test_wire.py``.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import shutil
import signal
import threading
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from nopeek.cli.main import main
from nopeek.errors import ChannelError
from nopeek.runtime import wire
from nopeek.runtime.channel import ACTIVATION, GRADIENT, Message
from tests.nopeek._cluster import (
    SENDER,
    SIGNALLED,
    WAIT,
    _Child,
    _Cluster,
    _Plan,
    _resume_state,
    _wait_for,
    _watch,
)
from tests.nopeek._run_checks import (
    _label_dir,
    _load,
    _metrics,
    _one_line,
    _same_metrics,
    _same_weights,
)
from tests.nopeek._wire_helpers import BAD_HEADERS, HEADER_BYTES

FLAGS = ["--dataset", "digits", "--epochs", "2", "--max-train", "200", "--dcor-samples", "32"]
FLAGS += ["--record-samples", "16", "--device", "cpu", "--quiet"]
EPOCHS = 2
TOPOLOGIES = {  # name -> (extra flags, number of parties); the 3-party ones run first
    "vertical": (["--topology", "vertical", "--clients", "2"], 3),
    # tabular: the clients' concatenated cuts meet the top through an adapter layer (seeded)
    "vertical-tabular": (
        ["--topology", "vertical", "--clients", "2", "--dataset", "breast-cancer"],
        3,
    ),
    "many-clients": (["--topology", "many-clients", "--clients", "2"], 3),
    "vanilla": ([], 2),
    # a user's module cut inside its residual block: both tensors crossing travel in one message
    "skip-cut": (["--model", "module:tests.nopeek._factory:make", "--cut", "block.conv1"], 2),
    "u-shaped": (["--topology", "u-shaped", "--cut", "conv2,fc1", "--alpha", "1"], 2),
}
# case -> (client flags, server flags): parties that disagree on what they run
DISAGREE = {
    "seed-mismatch": (["--seed", "0"], ["--seed", "1"]),
    "alpha-mismatch": (["--alpha", "0"], ["--alpha", "3"]),
    "defense-mismatch": ([], ["--defense", "cut-noise:gaussian,sigma=0.5,clip=1"]),
    "epochs-mismatch": (["--epochs", "2"], ["--epochs", "3"]),
    "mismatch": (["--batch-size", "32"], ["--batch-size", "16"]),
}
LONG = ["--epochs", "6"]  # runs that get killed or stopped after their first checkpoint
STALL_TIMEOUT = 10


@pytest.fixture(scope="module")
def children():
    """Every child started by this module; whatever still runs at the end is killed."""
    started: list[_Child] = []
    yield started
    for child in started:
        child.kill()


# --- the cluster: every distributed run of this module, started at once ----------------------


@pytest.fixture(scope="module")
def cluster(children, tmp_path_factory) -> _Cluster:
    """Three drivers (one a rank) run: the five topologies; a refused header and a 3-party
    failure; --resume from constructed states;
    a client whose training diverges and one that makes the server's loss NaN; a party alone
    (each rank); a server whose client gets SIGKILLed, and one whose client gets SIGSTOPped
    after its first checkpoint (those clients are the last jobs of drivers 1 and 0); the
    sender of the receiver test. Also torchrun. This process computes the in-process
    references meanwhile."""
    c = _Cluster(tmp_path_factory.mktemp("distributed"))
    c.logs.mkdir()
    plan = _Plan(c, FLAGS)
    job, wait_for = plan.job, plan.wait_for
    for name, (extra, world) in TOPOLOGIES.items():
        for rank in range(world):
            job(rank, name, rank, world, *extra)
    for rank in range(3):  # a 3-party run whose first client diverges
        diverge = ["--lr", "1e20"] if rank == 0 else []  # lr is each party's own setting
        job(rank, "vertical-error", rank, 3, *TOPOLOGIES["vertical"][0], "--alpha", "1", *diverge)
    for case, flags in DISAGREE.items():  # the label party refuses to start, naming the field
        for rank in (0, 1):
            job(rank, case, rank, 2, *flags[rank])
    for rank in (0, 1):
        plan.jobs[rank].append({"wait_for": str(c.root / "go"), "timeout": WAIT})
        job(rank, "resume-both", rank, 2, "--resume")
        job(rank, "resume-skew", rank, 2, "--resume")
        job(rank, "resume-vs-overwrite", rank, 2, ["--resume", "--overwrite"][rank])
        diverge = ["--lr", "1e20"] if rank == 0 else []  # the client only
        job(rank, "client-error", rank, 2, "--alpha", "1", *diverge)  # NoPeek: inf activations
        job(rank, "server-error", rank, 2, *diverge)  # the server's loss becomes NaN
    job(1, "lone-client", 0, 2, timeout=5)
    job(2, "lone-server", 1, 2, timeout=5)
    job(0, "stalled", 0, 2, *LONG)  # driver 0 is stopped in it
    job(1, "killed", 0, 2, *LONG)  # driver 1 is killed in it
    wait_for(2, "server-error", 0)  # its client is about to wait for it: a short join
    job(2, "stalled", 1, 2, *LONG, timeout=STALL_TIMEOUT)
    wait_for(2, "lone-client", 0)
    job(2, "killed", 1, 2, *LONG, timeout=60)
    headers = [h.tolist() for h, _ in BAD_HEADERS.values()]
    args = [c.sender_port, headers, str(c.logs / "sender-counts.json")]
    log = c.logs / "sender.0"
    plan.jobs[2].append({"exec": SENDER, "args": args, "log": f"{log}.json", "err": f"{log}.err"})
    plan.start(children)
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(c, stop), daemon=True)
    watcher.start()
    try:
        for name, (extra, _) in TOPOLOGIES.items():
            assert main(["train", *FLAGS, *extra, "--out", str(c.root / f"{name}.ref")]) == 0
        _wait_for(c, [c.logs / "vanilla.0.json", c.logs / "vanilla.1.json"])
        _resume_state(c.root)
        (c.root / "go").touch()
        ends = [j["log"] for mine in plan.jobs for j in mine if "log" in j and "exec" not in j]
        _wait_for(c, [Path(p) for p in ends if not p.endswith(("stalled.0.json", "killed.0.json"))])
        watcher.join(timeout=WAIT)
    finally:
        stop.set()
        watcher.join(timeout=10)
    return c


# --- 1, 2, 6. equality with the in-process run, bytes, torchrun ------------------------------
@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_distributed_equals_in_process(cluster, name):
    cluster.ok(name, TOPOLOGIES[name][1])
    ref = cluster.root / f"{name}.ref"
    want = _metrics(ref / "metrics.json")
    label = _label_dir(cluster.root / name)
    assert label.name == {"u-shaped": "client"}.get(name, "server")
    assert sorted(p.name for p in (cluster.root / name).iterdir()) == sorted(want["parties"])
    _same_metrics(_metrics(label / "metrics.json"), want)
    _same_weights(cluster.root / name, ref, want["parties"])


@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_wire_bytes_are_payload_plus_headers(cluster, name):
    """wire_bytes_total is every byte handed to torch.distributed (the final stats messages,
    which carry the peers' counts, are added by the label party that received them);
    payload_bytes_total is that minus 128 bytes a header; the payload is the tensors and ids of
    the parties' wire logs plus the stats texts."""
    cluster.ok(name, TOPOLOGIES[name][1])
    run = cluster.root / name
    m = _metrics(_label_dir(run) / "metrics.json")
    parties, label = m["parties"], _label_dir(run).name
    world = len(parties)
    sends = {p: cluster.job(name, r)["sent"] for r, p in enumerate(parties)}
    records = {p: _load(run / p / "checkpoint.pt")["wire_records"] for p in parties}
    # every message is a 128-byte header, then its tensor, then (activations, gradients) ids
    for party, log in sends.items():
        assert all(nbytes == HEADER_BYTES for _, nbytes, head in log if head)
        assert log[0][2], f"{party} did not start with a header"
    # each non-label party ends with its final stats message (a header and its text)
    final = [sends[p][-2:] for p in parties if p != label]
    assert all(head and dtype == "torch.uint8" for (_, _, head), (dtype, _, _) in final)
    on_wire = sum(n for log in sends.values() for _, n, _ in log)
    assert m["wire_bytes_total"] == on_wire
    headers = sum(head for log in sends.values() for *_, head in log)
    mine = [r for p in parties for r in records[p] if r[8] == p]  # each message once: its sender
    # + one loss message an epoch and party, and the final stats; the start-up handshake: each
    # peer's settings to the label party and its answer
    assert headers == len(mine) + (world - 1) * (EPOCHS + 1) + 2 * (world - 1)
    assert m["wire_bytes_total"] == m["payload_bytes_total"] + HEADER_BYTES * headers
    tensors = sum(r[7] for r in mine)
    ids = sum(8 * r[5][0] for r in mine if r[10] in (ACTIVATION, GRADIENT))
    texts = sum(n for log in sends.values() for d, n, _ in log if d == "torch.uint8")
    assert m["payload_bytes_total"] == tensors + ids + texts
    # one body a message, and the ids of each activation and gradient (int64, not a header)
    bodies = sum(1 for log in sends.values() for d, *_ in log if d != "torch.int64")
    n_texts = sum(1 for log in sends.values() for d, *_ in log if d == "torch.uint8")
    assert bodies == len(mine) + n_texts
    n_ids = sum(1 for log in sends.values() for d, _, h in log if d == "torch.int64" and not h)
    assert n_ids == sum(1 for r in mine if r[10] in (ACTIVATION, GRADIENT))


def test_torchrun_equals_in_process(cluster):
    """``torchrun --nproc-per-node 2 -m nopeek.cli.party``: ranks from torchrun's environment."""
    if cluster.torchrun is None:
        pytest.skip("torch.distributed with gloo is not available here")
    cluster.torchrun.ok()
    want = _metrics(cluster.root / "vanilla.ref" / "metrics.json")
    _same_metrics(_metrics(cluster.root / "torchrun" / "server" / "metrics.json"), want)
    _same_weights(cluster.root / "torchrun", cluster.root / "vanilla.ref", want["parties"])


# --- 5. --resume from the last common checkpoint ---------------------------------------------
@pytest.mark.parametrize("run", ["resume-both", "resume-skew"])
def test_resume_restarts_every_party_from_the_common_checkpoint(cluster, run):
    """Both parties back at epoch 1, or the client one epoch ahead of the server: both resume
    from epoch 1 to the uninterrupted run's metrics and bit-equal weights."""
    cluster.ok(run, 2)
    want = _metrics(cluster.root / "vanilla.ref" / "metrics.json")
    _same_metrics(_metrics(cluster.root / run / "server" / "metrics.json"), want)
    _same_weights(cluster.root / run, cluster.root / "vanilla.ref", want["parties"])


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


@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_inference_serves_a_gathered_distributed_run(cluster, name):
    """Every party's folder gathered in one place serves the same predictions as the
    in-process run, each party's segments and hook states from its own checkpoint."""
    from nopeek.inference import infer

    cluster.ok(name, TOPOLOGIES[name][1])
    served = infer(cluster.root / name)
    reference = infer(cluster.root / f"{name}.ref")
    for key in reference.logits:
        assert torch.equal(served.logits[key], reference.logits[key]), key
    want = _metrics(_label_dir(cluster.root / name) / "metrics.json")["test_accuracy"]
    assert served.metrics["accuracy"] == pytest.approx(want, abs=1e-6)


def test_inference_names_a_missing_party_folder(cluster, tmp_path):
    from nopeek.errors import CheckpointError
    from nopeek.inference import infer

    cluster.ok("vanilla", 2)
    shutil.copytree(cluster.root / "vanilla" / "client", tmp_path / "run" / "client")
    with pytest.raises(CheckpointError, match=r"has no folder for server; gather every party's"):
        infer(tmp_path / "run")


def test_inference_names_the_folder_for_a_party_folder(cluster):
    """`nopeek infer --run D/server`: one party's segments cannot serve; the line names D."""
    from nopeek.errors import CheckpointError
    from nopeek.inference import infer

    cluster.ok("vanilla", 2)
    run = cluster.root / "vanilla"
    with pytest.raises(CheckpointError, match=rf"is server's folder of a distributed run: .*"
                       rf"pass --run {run}, which holds every party's folder"):  # fmt: skip
        infer(run / "server")


def test_an_attack_on_a_distributed_run_is_its_attackers(cluster, tmp_path, capsys):
    """`nopeek attack --run D`: a reconstruction attack reads what the server observed and
    writes into D/server, a label attack the client's view into D/client, the white-box weights
    from each party's own checkpoint: the very results of the in-process run."""
    cluster.ok("vanilla", 2)
    run, ref = tmp_path / "run", tmp_path / "ref"
    shutil.copytree(cluster.root / "vanilla", run)
    shutil.copytree(cluster.root / "vanilla.ref", ref)
    budget = ["--attack", "white-box:n_samples=2,grad-match", "--steps", "5"]
    for folder in (run, ref):
        assert main(["attack", "--run", str(folder), *budget]) == 0, capsys.readouterr().err
    for name, home in (("white-box", "server"), ("grad-match", "client")):
        got = _metrics(run / home / "attacks" / f"{name}.json")
        want = _metrics(ref / "attacks" / f"{name}.json")
        assert got.pop("run") == str(run) and want.pop("run") == str(ref)
        assert got == want, name
    assert sorted(p.name for p in run.iterdir()) == ["client", "server"]
    strongest = ["--attack", "white-box:n_samples=2", "--strongest", "--attack-budget", "1"]
    assert main(["attack", "--run", str(run), *strongest, "--steps", "2"]) == 0
    assert (run / "server" / "attacks" / "white-box.strongest.json").is_file()  # the attacker's
    assert sorted(p.name for p in run.iterdir()) == ["client", "server"]


def test_an_attack_on_one_party_folder_runs_as_that_party(cluster, tmp_path, capsys):
    """`--run D/server` alone (the server's host): its own attacks run from its folder; one that
    is the client's names the client's folder; one that needs the client's weights names the
    folder to gather."""
    cluster.ok("vanilla", 2)
    shutil.copytree(cluster.root / "vanilla" / "server", tmp_path / "run" / "server")
    server = tmp_path / "run" / "server"
    argv = ["attack", "--run", str(server), "--steps", "3", "--n-samples", "2"]
    assert main([*argv, "--attack", "unsplit"]) == 0
    assert (server / "attacks" / "unsplit.json").is_file()
    capsys.readouterr()
    for attack, message in [
        ("grad-match", rf"this attack is client's .*; pass --run {tmp_path / 'run' / 'client'} "),
        ("white-box", r"has no folder for client, whose checkpoint or observations this attack"),
    ]:
        assert main([*argv, "--attack", attack]) == 2
        assert re.search(message, _one_line(capsys.readouterr().err))
