"""The distributed runs that tests/nopeek/test_distributed.py and test_distributed_faults.py
check: every party its own process on 127.0.0.1, all started at once by one session fixture
(``cluster``; registered in tests/nopeek/conftest.py), since starting a child (importing torch)
is most of its life. See test_distributed.py's docstring for what runs where.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from nopeek.cli.main import main
from tests.nopeek._cluster import (
    SENDER,
    WAIT,
    _Child,
    _Cluster,
    _Plan,
    _resume_state,
    _wait_for,
    _watch,
)
from tests.nopeek._wire_helpers import BAD_HEADERS

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


@pytest.fixture(scope="session")
def children():
    """Every child the cluster starts; whatever still runs at the end of the session is killed."""
    started: list[_Child] = []
    yield started
    for child in started:
        child.kill()


# --- the cluster: every distributed run of the two modules, started at once ----------------------


@pytest.fixture(scope="session")
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
