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
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from nopeek.channel import ACTIVATION, GRADIENT, WEIGHTS, Message
from nopeek.cli.main import main
from nopeek.errors import ChannelError
from nopeek.runtime import wire

FLAGS = ["--dataset", "digits", "--epochs", "2", "--max-train", "200", "--dcor-samples", "32"]
FLAGS += ["--record-samples", "16", "--device", "cpu", "--quiet"]
EPOCHS = 2
TOPOLOGIES = {  # name -> (extra flags, number of parties); the 3-party ones run first
    "vertical": (["--topology", "vertical", "--clients", "2"], 3),
    "many-clients": (["--topology", "many-clients", "--clients", "2"], 3),
    "vanilla": ([], 2),
    # a user's module cut inside its residual block: both tensors crossing travel in one message
    "skip-cut": (["--model", "module:tests.nopeek._factory:make", "--cut", "block.conv1"], 2),
    "u-shaped": (["--topology", "u-shaped", "--cut", "conv2,fc1", "--alpha", "1"], 2),
}
NOT_COMPARED = {"train_seconds", "wire_bytes_total", "payload_bytes_total"}
HEADER_BYTES = 16 * 8  # the fixed header: 16 int64 values
LONG = ["--epochs", "6"]  # runs that get killed or stopped after their first checkpoint
STALL_TIMEOUT = 10
WAIT = 300  # seconds any child may run before the test fails (and kills it)

# One party of many runs in turn: argv[1] is a JSON list of jobs: {"argv", "log", "err"} (a
# `nopeek` command line, where its result goes, where its stderr goes), {"exec", "args", "log",
# "err"} (Python code run with ARGS) or {"wait_for": path, "timeout"}. A job's result: exit
# status, seconds, when it ended, and every tensor handed to dist.isend (dtype, bytes, whether
# it is a nopeek header). torch.distributed's pickling calls raise.
DRIVER = """
import json, os, sys, time, traceback
import torch, torch.distributed as dist, torch.distributed.distributed_c10d as c10d
def _no_pickles(*args, **kwargs):
    raise AssertionError("a pickled object was about to cross the wire")
for mod in (dist, c10d):
    for name in ("send_object_list", "recv_object_list", "broadcast_object_list",
                 "all_gather_object", "gather_object", "scatter_object_list"):
        setattr(mod, name, _no_pickles)
from nopeek.cli.main import main
from nopeek.runtime import wire
sent, real_isend = [], dist.isend
def isend(tensor, dst, *args, **kwargs):
    head = (tensor.dtype == torch.int64 and tensor.numel() == wire.HEADER_LEN
            and int(tensor[0]) == wire.MAGIC)
    sent.append([str(tensor.dtype), tensor.numel() * tensor.element_size(), bool(head)])
    return real_isend(tensor, dst, *args, **kwargs)
dist.isend = isend
def run(job):
    if "argv" in job:
        return main(job["argv"])
    exec(compile(job["exec"], "<job>", "exec"), {"ARGS": job["args"]})
    return 0
for job in json.loads(sys.argv[1]):
    if "wait_for" in job:
        deadline = time.monotonic() + job["timeout"]
        while not os.path.exists(job["wait_for"]) and time.monotonic() < deadline:
            time.sleep(0.02)
        continue
    sent.clear()
    if not dist.is_initialized():  # a join that failed leaves its group count behind: a fresh
        c10d._world.group_count = 0  # process (which each job stands for) starts from 0
    sys.stderr.flush()
    saved, err = os.dup(2), os.open(job["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(err, 2)
    began = time.monotonic()
    try:
        code = run(job)
    except BaseException:
        traceback.print_exc()
        code = 1
    seconds = time.monotonic() - began
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(err)
    os.close(saved)
    result = {"code": code, "seconds": seconds, "ended": time.time(), "sent": sent}
    open(job["log"] + ".tmp", "w").write(json.dumps(result))
    os.replace(job["log"] + ".tmp", job["log"])
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Child:
    """A child process (``python *args``, one thread) with its stderr in a file."""

    def __init__(self, args: list, folder: Path, name: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.name, self.err_path = name, folder / f"{name}.err"
        with open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, *map(str, args)],
                env=os.environ | {"OMP_NUM_THREADS": "1"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def wait(self, timeout: float = WAIT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} did not end within {timeout:g} s; stderr:\n{self.err}")

    def ok(self) -> None:
        assert self.wait() == 0, f"{self.name} failed:\n{self.err}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def children():
    """Every child started by this module; whatever still runs at the end is killed."""
    started: list[_Child] = []
    yield started
    for child in started:
        child.kill()


def _metrics(path: Path) -> dict:
    return json.loads(path.read_text())


def _same_metrics(got: dict, want: dict) -> None:
    """Equal for every key but timings and the distributed byte totals; floats bitwise (their
    shortest repr is equal exactly when the bits are, NaN included)."""
    keep = lambda m: {k: v for k, v in m.items() if k not in NOT_COMPARED}  # noqa: E731
    assert json.dumps(keep(got), sort_keys=True) == json.dumps(keep(want), sort_keys=True)


def _bits(t: torch.Tensor):
    return t.dtype, tuple(t.shape), t.detach().contiguous().numpy().tobytes()


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _same_weights(run: Path, reference: Path, parties: list[str]) -> None:
    """Each party's own checkpoint holds only its own segments, bit-equal to the reference's."""
    want = _load(reference / "checkpoint.pt")
    for party in parties:
        got = _load(run / party / "checkpoint.pt")
        assert set(got["parties"]) == {party}, f"{party}'s checkpoint holds other parties"
        assert got["epoch"] == want["epoch"] == EPOCHS
        assert len(got["parties"][party]) == len(want["parties"][party])
        for mine, theirs in zip(got["parties"][party], want["parties"][party]):
            assert mine.keys() == theirs.keys()
            for key in theirs:
                assert _bits(mine[key]) == _bits(theirs[key]), f"{party} {key}"


def _label_dir(run: Path) -> Path:
    (found,) = [p for p in run.iterdir() if (p / "metrics.json").is_file()]
    return found


def _one_line(err: str) -> str:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.strip()


# --- 4. the header: malformed or oversized, rejected before anything is allocated -----------
def _raw(**fields) -> torch.Tensor:
    """A header for an activation (3, 16, 4, 4) float32 with 3 ids, fields replaced by name."""
    good = wire.encode(ACTIVATION, 0, 0, 5, torch.zeros(3, 16, 4, 4), 3, "cpu").tolist()
    where = {"magic": 0, "version": 1, "kind": 2, "cut": 3, "sender": 4, "step": 5}
    where |= {"dtype": 6, "ndim": 7, "n_ids": 14} | {f"d{i}": 8 + i for i in range(6)}
    for name, value in fields.items():
        good[where[name]] = value
    return torch.tensor(good, dtype=torch.int64)


def _shape(*dims: int) -> dict:
    return {"ndim": len(dims)} | {f"d{i}": d for i, d in enumerate(dims)}


ACT = wire.Expect(ACTIVATION, 0, 0, 5, tail=(16, 4, 4), max_batch=64)


def test_header_round_trip_is_sixteen_int64():
    raw = wire.encode(GRADIENT, 2, 1, 7, torch.zeros(3, 16, 4, 4, dtype=torch.float64), 3, "cpu")
    assert raw.dtype == torch.int64 and raw.shape == (16,) and wire.HEADER_LEN * 8 == HEADER_BYTES
    head = wire.decode(raw, sender_name="server")
    assert head == wire.Header(GRADIENT, 2, 1, 7, torch.float64, (3, 16, 4, 4), 3)
    wire.check(
        head,
        wire.Expect(GRADIENT, 2, 1, 7, tail=(16, 4, 4), max_batch=3),
        sender_name="server",
        cut_name="conv2",
    )


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"magic": 0x1234}, r"message from client is not a nopeek header \(magic/version 0x1234"),
        ({"version": 2}, r"not a nopeek header \(magic/version 0x4e4f5045/2\)"),
        ({"kind": 99}, "message from client has an unknown kind code 99"),
        ({"dtype": 0}, "message from client has an unknown dtype code 0"),
        ({"dtype": 99}, "unknown dtype code 99"),
        ({"ndim": 7}, r"has 7 dims \(at most 6\)"),
        ({"ndim": -1}, r"has -1 dims"),
        ({"d0": -3}, r"negative size in its shape \(-3, 16, 4, 4\)"),
        ({"n_ids": -1}, "negative size .* or id count -1"),
    ],
)
def test_decode_refuses_a_malformed_header(fields, match):
    with pytest.raises(ChannelError, match=match):
        wire.decode(_raw(**fields), sender_name="client")


@pytest.mark.parametrize(
    "fields, want, match",
    [
        # a huge shape: (10**12, 32, 4, 4) float32 would be 2 PB; refused on the tail
        (_shape(10**12, 32, 4, 4) | {"n_ids": 10**12}, ACT, r"field shape is \(1000000000000, 32"),
        (_shape(10**12, 16, 4, 4) | {"n_ids": 10**12}, ACT, r"batch of 1000000000000, .* 1\.\.64"),
        (_shape(0, 16, 4, 4) | {"n_ids": 0}, ACT, r"batch of 0, expected 1\.\.64"),
        (_shape(3, 16, 4), ACT, r"field shape is \(3, 16, 4\), expected \(N, 16, 4, 4\)"),
        (_shape(3, 16, 4, 4, 1), ACT, r"field shape is \(3, 16, 4, 4, 1\)"),
        ({"dtype": wire.DTYPE_CODES[torch.int64]}, ACT, "field dtype is torch.int64"),
        ({"dtype": wire.DTYPE_CODES[torch.uint8]}, ACT, "field dtype is torch.uint8"),
        (
            {"dtype": wire.DTYPE_CODES[torch.float64]},
            wire.Expect(
                ACTIVATION, 0, 0, 5, tail=(16, 4, 4), max_batch=64, dtypes=(torch.float32,)
            ),
            "field dtype is torch.float64",
        ),
        ({"n_ids": 2}, ACT, r"field n_ids is 2, expected one per row \(3\)"),
        (
            {"kind": wire.KIND_CODES[GRADIENT]},
            ACT,
            "expected an activation at cut 'conv2', got grad",
        ),
        ({"step": 6}, ACT, "field cut/sender/step is 0/0/6, expected 0/0/5"),
        ({"sender": 2}, ACT, "field cut/sender/step is 0/2/5"),
        ({"cut": 1}, ACT, "field cut/sender/step is 1/0/5"),
    ],
)
def test_check_refuses_what_the_schedule_does_not_expect(fields, want, match):
    head = wire.decode(_raw(**fields), sender_name="client")
    with pytest.raises(ChannelError, match="message from client: " + ".*" + match):
        wire.check(head, want, sender_name="client", cut_name="conv2")


def test_check_bounds_weights_and_texts():
    flat = wire.decode(wire.encode(WEIGHTS, 0, 1, 3, torch.zeros(99), 0, "cpu"), sender_name="c")
    with pytest.raises(ChannelError, match=r"field shape is \(99,\), expected \(100,\)"):
        wire.check(flat, wire.Expect(WEIGHTS, 0, 1, 3, flat=100), sender_name="c", cut_name="x")
    wire.check(flat, wire.Expect(WEIGHTS, 0, 1, 3, flat=99), sender_name="c", cut_name="x")
    text = wire.Expect(wire.STATS, -1, 1, 0, dtypes=(torch.uint8,))
    big = torch.zeros(wire.MAX_TEXT + 1, dtype=torch.uint8)
    head = wire.decode(wire.encode(wire.STATS, -1, 1, 0, big, 0, "cpu"), sender_name="c")
    with pytest.raises(ChannelError, match=f"expected at most {wire.MAX_TEXT} bytes"):
        wire.check(head, text, sender_name="c", cut_name="-")
    square = torch.zeros(4, 4, dtype=torch.uint8)
    head = wire.decode(wire.encode(wire.STATS, -1, 1, 0, square, 0, "cpu"), sender_name="c")
    with pytest.raises(ChannelError, match=r"field shape is \(4, 4\)"):
        wire.check(head, text, sender_name="c", cut_name="-")
    head = wire.decode(wire.encode(wire.STATS, -1, 1, 0, big[:10], 0, "cpu"), sender_name="c")
    wire.check(head, text, sender_name="c", cut_name="-")


def test_encode_refuses_what_the_header_cannot_describe():
    with pytest.raises(ChannelError, match="cannot send a 7-d tensor; at most 6 dims"):
        wire.encode(ACTIVATION, 0, 0, 0, torch.zeros([1] * 7), 0, "cpu")
    with pytest.raises(ChannelError, match="cannot send dtype torch.complex64"):
        wire.encode(ACTIVATION, 0, 0, 0, torch.zeros(2, dtype=torch.complex64), 0, "cpu")


def test_no_pickled_objects_in_the_runtime_source():
    """The runtime never uses torch.distributed's pickling calls (the children also make them
    raise, see ``DRIVER``)."""
    import ast

    import nopeek.runtime as runtime

    banned = {"send_object_list", "recv_object_list", "broadcast_object_list", "gather_object"}
    banned |= {"all_gather_object", "scatter_object_list", "pickle", "marshal", "dill"}
    for path in Path(runtime.__file__).parent.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names |= {a.name.split(".")[0] for a in node.names}
                names.add(getattr(node, "module", None))
        assert not names & banned, f"{path.name} uses {names & banned}"


# --- the cluster: every distributed run of this module, started at once ----------------------
# The sender of the receiver test (a job of driver 2; the receiver is this process): a valid
# activation and stats text through a channel, then hand-made headers alone (ARGS[1]), then an
# error message; it writes its byte counters to ARGS[2] and stays until the receiver gave up.
SENDER = """
import datetime, json, torch, torch.distributed as dist
from nopeek.channel import Message
from nopeek.runtime.distributed import TorchDistributedChannel
port, headers, out = ARGS
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=2,
                        timeout=datetime.timedelta(seconds=600))
try:
    ch = TorchDistributedChannel(me="client", ranks={"client": 0, "server": 1}, cuts=["conv2"],
                                 expect=lambda kind, cut, sender: ((16, 4, 4), None),
                                 max_batch=64, timeout=60)
    z = torch.arange(4 * 16 * 16, dtype=torch.float32).reshape(4, 16, 4, 4)
    ch.post(Message("activation", "conv2", "client", "server", 0, z, torch.tensor([7, 1, 5, 3])))
    ch.send_text("stats", "server", json.dumps({"steps": [[0, 4, [0.5]]]}))
    counts = [ch.header_bytes, ch.payload_bytes]
    for values in headers:
        dist.isend(torch.tensor(values, dtype=torch.int64), dst=1).wait()
    ch.send_text("error", "server", "client: boom")  # what broadcast_error sends
    counts += [ch.header_bytes, ch.payload_bytes]
    open(out, "w").write(json.dumps(counts))
    try:  # stay until the receiver gave up waiting (gloo then closes the pair)
        dist.irecv(torch.zeros(1), src=1).wait(timeout=datetime.timedelta(seconds=60))
    except RuntimeError:
        pass
finally:
    dist.destroy_process_group()
"""
BAD_HEADERS = {  # what the sender sends, headers alone -> what the receiver must say
    "huge batch": (
        _raw(step=1, n_ids=10**12, **_shape(10**12, 16, 4, 4)),  # 1 PB of float32 announced
        r"message from client: field shape has a batch of 1000000000000, expected 1\.\.64",
    ),
    "wrong dtype": (
        _raw(step=2, dtype=wire.DTYPE_CODES[torch.uint8]),
        r"message from client: field dtype is torch\.uint8",
    ),
    "ids": (
        _raw(step=3, n_ids=4),
        r"message from client: field n_ids is 4, expected one per row \(3\)",
    ),
    "huge shape": (
        _raw(step=4, n_ids=10**12, **_shape(10**12, 32, 4, 4)),
        r"message from client: field shape is \(1000000000000, 32, 4, 4\), expected \(N, 16",
    ),
}


class _Cluster:
    """The runs' folders (``root / <run> / <party>``), the in-process references (``root /
    <run>.ref``) and each job's result."""

    def __init__(self, root: Path) -> None:
        self.root, self.logs = root, root / "logs"
        self.signalled: dict[str, float] = {}  # case -> when its client was killed / stopped
        self.drivers: list[_Child] = []
        self.torchrun: _Child | None = None
        self.sender_port = _port()

    def job(self, name: str, rank: int) -> dict:
        """Exit status, seconds, when it ended (``time.time()``), what it sent, its stderr."""
        result = json.loads((self.logs / f"{name}.{rank}.json").read_text())
        return result | {"err": (self.logs / f"{name}.{rank}.err").read_text()}

    def ok(self, name: str, world: int) -> None:
        for rank in range(world):
            job = self.job(name, rank)
            assert job["code"] == 0, f"{name} rank {rank} failed:\n{job['err']}"


def _back_to_epoch_one(party_dir: Path) -> None:
    """What a party killed after its first epoch has: the epoch-1 checkpoint only."""
    for name in ("metrics.json", "observations.pt", "checkpoint.pt"):
        (party_dir / name).unlink(missing_ok=True)
    (party_dir / "checkpoint.prev.pt").rename(party_dir / "checkpoint.pt")


def _resume_state(root: Path) -> None:
    """From the finished vanilla run: both parties back at epoch 1 (resume-both); the client
    finished (epoch 2, and epoch 1 kept) but the server back at epoch 1 (resume-skew)."""
    for run in ("resume-both", "resume-skew"):
        shutil.copytree(root / "vanilla", root / run)
        _back_to_epoch_one(root / run / "server")
    _back_to_epoch_one(root / "resume-both" / "client")


# case -> (the driver whose last job is its client, the signal once that wrote a checkpoint)
SIGNALLED = {"killed": (1, signal.SIGKILL), "stalled": (0, signal.SIGSTOP)}


def _watch(cluster: _Cluster, stop: threading.Event) -> None:
    """SIGKILL / SIGSTOP the driver running a client right after its first checkpoint; the
    stopped one is killed once its server gave up."""
    todo = dict(SIGNALLED)
    deadline = time.monotonic() + WAIT
    while not stop.is_set() and time.monotonic() < deadline:
        for case, (driver, sig) in list(todo.items()):
            if (cluster.root / case / "client" / "checkpoint.pt").is_file():
                cluster.drivers[driver].proc.send_signal(sig)
                cluster.signalled[case] = time.time()
                del todo[case]
        if "stalled" in cluster.signalled and (cluster.logs / "stalled.1.json").is_file():
            cluster.drivers[SIGNALLED["stalled"][0]].kill()
            if not todo:
                return
        time.sleep(0.01)


def _wait_for(cluster: _Cluster, paths: list[Path]) -> None:
    """Until every file in ``paths`` exists; fails if a driver ended unasked or time is up."""
    deadline = time.monotonic() + WAIT
    while not all(p.is_file() for p in paths):
        signalled = {SIGNALLED[case][0] for case in cluster.signalled}
        for i, driver in enumerate(cluster.drivers):
            if i not in signalled and driver.proc.poll() is not None:
                missing = [p.name for p in paths if not p.is_file()]
                pytest.fail(f"driver{i} ended before writing {missing}:\n{driver.err}")
        assert time.monotonic() < deadline, f"no {paths} within {WAIT} s"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def cluster(children, tmp_path_factory) -> _Cluster:
    """Three drivers (one a rank) run: the four topologies; --resume from constructed states;
    a client whose training diverges and one that makes the server's loss NaN; a party alone
    (each rank); a server whose client gets SIGKILLed, and one whose client gets SIGSTOPped
    after its first checkpoint (those clients are the last jobs of drivers 1 and 0); the
    sender of the receiver test. Also torchrun. This process computes the in-process
    references meanwhile."""
    c = _Cluster(tmp_path_factory.mktemp("distributed"))
    c.logs.mkdir()
    ports: dict[str, int] = {}
    jobs: list[list[dict]] = [[], [], []]

    def job(driver: int, name: str, rank: int, world: int, *extra, timeout=120) -> None:
        port = ports.setdefault(name, _port())
        argv = ["party", "--rank", rank, "--world-size", world, "--master-port", port]
        argv += ["--out", c.root / name, "--timeout", timeout, *FLAGS, *extra]
        log = c.logs / f"{name}.{rank}"
        jobs[driver].append(
            {"argv": list(map(str, argv)), "log": f"{log}.json", "err": f"{log}.err"}
        )

    def wait_for(driver: int, name: str, rank: int) -> None:
        jobs[driver].append({"wait_for": str(c.logs / f"{name}.{rank}.json"), "timeout": WAIT})

    for name, (extra, world) in TOPOLOGIES.items():
        for rank in range(world):
            job(rank, name, rank, world, *extra)
    for rank in (0, 1):
        jobs[rank].append({"wait_for": str(c.root / "go"), "timeout": WAIT})
        job(rank, "resume-both", rank, 2, "--resume")
        job(rank, "resume-skew", rank, 2, "--resume")
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
    jobs[2].append({"exec": SENDER, "args": args, "log": f"{log}.json", "err": f"{log}.err"})
    for d, mine in enumerate(jobs):
        c.drivers.append(_Child(["-c", DRIVER, json.dumps(mine)], c.logs, f"driver{d}"))
        children.append(c.drivers[-1])
    if dist.is_available() and dist.is_gloo_available():
        args = ["-m", "torch.distributed.run", "--nproc-per-node", 2, "--master-port", _port()]
        args += ["-m", "nopeek.party", "--out", c.root / "torchrun", "--timeout", 120, *FLAGS]
        c.torchrun = _Child(args, c.logs, "torchrun")
        children.append(c.torchrun)
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(c, stop), daemon=True)
    watcher.start()
    try:
        for name, (extra, _) in TOPOLOGIES.items():
            assert main(["train", *FLAGS, *extra, "--out", str(c.root / f"{name}.ref")]) == 0
        _wait_for(c, [c.logs / "vanilla.0.json", c.logs / "vanilla.1.json"])
        _resume_state(c.root)
        (c.root / "go").touch()
        ends = [j["log"] for mine in jobs for j in mine if "log" in j and "exec" not in j]
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
    # + one loss message an epoch and party, and the final stats
    assert headers == len(mine) + (world - 1) * (EPOCHS + 1)
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
    """``torchrun --nproc-per-node 2 -m nopeek.party``: ranks from torchrun's environment."""
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
