"""Each party reads only its own file, aligned by private set intersection (issue 19): real
processes on 127.0.0.1, each party in its own folder holding only its own file.

Sites hold overlapping but different patients: a hospital the features of 500 patients, a lab
the outcomes of 489 (420 in common); for vertical, two hospitals 15 columns each and the lab
the outcomes. Every party opens only files in its own folder (an audit hook in each process
records every file it opens); the run trains on the patients all of them hold, bit-equal to
the in-process run on the joined file (``nopeek train --dataset csv:joined.csv --id-column``),
over torch.distributed and over gRPC with mutual TLS; ``nopeek align`` writes what each party
learned and nothing else; the ids on the wire are positions in the aligned order, never the
patients' ids.

All parties of all runs start at once: three drivers, one a rank, each run the jobs of its rank
in turn (the first two ranks of the vanilla, align, vertical and gRPC runs; the third the
vertical server), while this process trains the in-process references.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("private_set_intersection.python")

from nopeek.cli.main import main  # noqa: E402
from tests.nopeek._cluster import _Child, _port  # noqa: E402
from tests.nopeek._run_checks import _metrics, _same_metrics, _same_weights  # noqa: E402

FLAGS = ["--epochs", "2", "--dcor-samples", "32", "--record-samples", "16", "--device", "cpu"]
FLAGS += ["--quiet", "--id-column", "patient_id", "--timeout", "120"]
VERTICAL = ["--topology", "vertical", "--clients", "2"]
COLUMNS = [f"f{j}" for j in range(30)]
N_ALIGNED = {"vanilla": 420, "vertical": 460}

# One process's jobs in turn: argv[1] is a JSON list of {"argv", "cwd", "log", "err"}; each job
# runs `nopeek ARGV` in folder CWD and writes its exit status, every file it opened, its time.
DRIVER = r"""
import json, os, sys, time, traceback
opened = []
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        opened.append(os.path.abspath(os.fsdecode(args[0])))
sys.addaudithook(hook)
from nopeek.cli.main import main
for job in json.loads(sys.argv[1]):
    os.chdir(job["cwd"])
    opened.clear()
    sys.stderr.flush()
    saved, err = os.dup(2), os.open(job["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(err, 2)
    began = time.monotonic()
    try:
        code = main(job["argv"])
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(err)
    os.close(saved)
    seconds = time.monotonic() - began
    result = json.dumps({"code": code, "opened": sorted(set(opened)), "seconds": seconds})
    with open(job["log"], "w") as f:
        f.write(result)
"""


def _write(path: Path, header: list[str], rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def _sites(root: Path) -> None:
    """Every site's own file, and (for the references only) the joined files."""
    from sklearn.datasets import load_breast_cancer

    b = load_breast_cancer()
    n = len(b.target)
    ids = [str(700000 + int(i)) for i in np.random.default_rng(0).permutation(n)]
    outcome = [b.target_names[t] for t in b.target]

    def table(path: str, rows, lo: int = 0, hi: int = 0, labels: bool = False) -> None:
        header = ["patient_id", *COLUMNS[lo:hi], *(["outcome"] if labels else [])]
        body = [
            [ids[i], *(repr(float(v)) for v in b.data[i, lo:hi]), *([outcome[i]] if labels else [])]
            for i in rows
        ]
        _write(root / path, header, body)

    table("hospital/features.csv", range(500), 0, 30)
    table("lab/labels.csv", range(80, n), labels=True)
    table("ref/vanilla.csv", sorted(set(range(500)) & set(range(80, n))), 0, 30, labels=True)
    a, c, lab = range(0, 520), range(40, n), range(60, n)
    table("v-hospital0/cols.csv", a, 0, 15)
    table("v-hospital1/cols.csv", reversed(c), 15, 30)  # in another order
    table("v-lab/labels.csv", lab, labels=True)
    table("ref/vertical.csv", sorted(set(a) & set(c) & set(lab)), 0, 30, labels=True)


# (run, rank) -> (site folder, its own file flags); every party of a run gets the same flags
OWN = {
    ("vanilla", 0): ("hospital", ["--dataset", "csv:features.csv"]),
    ("vanilla", 1): ("lab", ["--labels", "csv:labels.csv", "--target", "outcome"]),
    ("vertical", 0): ("v-hospital0", ["--dataset", "csv:cols.csv", *VERTICAL]),
    ("vertical", 1): ("v-hospital1", ["--dataset", "csv:cols.csv", *VERTICAL]),
    ("vertical", 2): ("v-lab", ["--labels", "csv:labels.csv", "--target", "outcome", *VERTICAL]),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from nopeek.runtime.certs import make_certs

    pytest.importorskip("grpc")
    root = tmp_path_factory.mktemp("own")
    _sites(root)
    make_certs(root / "pki", ["client", "server"])
    jobs: list[list[dict]] = [[], [], []]

    def job(name: str, run: str, rank: int, argv: list[str]) -> None:
        site, own = OWN[(run, rank)]
        log = root / "logs" / f"{name}.{rank}"
        where = {"cwd": str(root / site), "log": f"{log}.json", "err": f"{log}.err"}
        jobs[rank].append({"argv": [*argv, *own], **where})

    for name, run in (("vanilla", "vanilla"), ("vertical", "vertical")):
        port = _port()
        for rank in range(3 if run == "vertical" else 2):
            launch = ["--rank", str(rank), "--world-size", str(3 if run == "vertical" else 2)]
            launch += ["--master-port", str(port), "--out", str(root / name)]
            job(name, run, rank, ["party", *FLAGS, *launch])
        if run == "vanilla":  # then the alignment alone, the same parties
            port = _port()
            for rank in range(2):
                launch = ["--rank", str(rank), "--world-size", "2", "--master-port", str(port)]
                argv = ["align", "--id-column", "patient_id", "--timeout", "120", *launch]
                job("align", run, rank, [*argv, "--out", str(root / "align")])
    peers = {"client": _port(), "server": _port()}
    for rank, role in enumerate(("client", "server")):
        pki = root / "pki"
        tls = ["--transport", "grpc", "--ca", str(pki / "ca.pem")]
        tls += ["--cert", str(pki / f"{role}.pem"), "--key", str(pki / f"{role}.key")]
        tls += ["--peers", ",".join(f"{p}=127.0.0.1:{port}" for p, port in peers.items())]
        job("grpc", "vanilla", rank, ["party", *FLAGS, *tls, "--out", str(root / "grpc")])
    (root / "logs").mkdir()
    drivers = [
        _Child(["-c", DRIVER, json.dumps(mine)], root / "logs", f"driver{d}")
        for d, mine in enumerate(jobs)
    ]
    try:
        for run in ("vanilla", "vertical"):
            extra = VERTICAL if run == "vertical" else []
            argv = ["train", *FLAGS[:-2], "--dataset", f"csv:{root / 'ref' / run}.csv"]
            assert (
                main([*argv, "--target", "outcome", *extra, "--out", str(root / f"{run}.ref")]) == 0
            )
        for driver in drivers:
            driver.ok()
    finally:
        for driver in drivers:
            driver.kill()
    return root


def _job(root: Path, name: str, rank: int) -> dict:
    result = json.loads((root / "logs" / f"{name}.{rank}.json").read_text())
    return result | {"err": (root / "logs" / f"{name}.{rank}.err").read_text()}


def _ok(root: Path, name: str, ranks: int) -> None:
    for rank in range(ranks):
        job = _job(root, name, rank)
        assert job["code"] == 0, f"{name} rank {rank}:\n{job['err']}"


@pytest.mark.parametrize(
    ("name", "reference", "parties"),
    [
        ("vanilla", "vanilla", ["client", "server"]),
        ("vertical", "vertical", ["client0", "client1", "server"]),
        ("grpc", "vanilla", ["client", "server"]),
    ],
)
def test_own_files_train_bit_equal_to_the_joined_file_in_one_process(
    runs, name, reference, parties
):
    """Same metrics (but for ``dataset``: each party names its own file) and bit-equal
    weights at every party, on the patients every site holds."""
    _ok(runs, name, len(parties))
    want = _metrics(runs / f"{reference}.ref" / "metrics.json")
    got = _metrics(runs / name / "server" / "metrics.json")
    assert got["train_samples"] == want["train_samples"]
    assert (got.pop("dataset"), want.pop("dataset")) == ("", f"csv:{runs / 'ref' / reference}.csv")
    _same_metrics(got, want)
    _same_weights(runs / name, runs / f"{reference}.ref", parties)


@pytest.mark.parametrize(
    "name, ranks", [("vanilla", 2), ("vertical", 3), ("align", 2), ("grpc", 2)]
)
def test_no_party_opens_another_partys_folder(runs, name, ranks):
    _ok(runs, name, ranks)
    run = "vertical" if name == "vertical" else "vanilla"
    sites = {runs / OWN[(run, r)][0] for r in range(ranks)}
    for rank in range(ranks):
        mine = runs / OWN[(run, rank)][0]
        opened = [Path(p) for p in _job(runs, name, rank)["opened"]]
        own = [p for p in opened if p.is_relative_to(mine)]
        others = [p for p in opened for s in sites - {mine} if p.is_relative_to(s)]
        assert own and not others, (rank, others)
        assert not any(p.is_relative_to(runs / "ref") for p in opened)


def test_the_wire_carries_positions_in_the_aligned_order_never_patient_ids(runs):
    from nopeek.observe import Observations

    _ok(runs, "vanilla", 2)
    for party in ("client", "server"):
        groups = Observations.load(runs / "vanilla" / party / "observations.pt").groups
        ids = {int(i) for g in groups.values() for i in g["ids"].tolist()}
        assert ids and ids <= set(range(N_ALIGNED["vanilla"])), party


def test_align_writes_what_each_party_learned_and_nothing_else(runs):
    _ok(runs, "align", 2)
    ids = {}
    for site, party in (("hospital", "client"), ("lab", "server")):
        with (runs / site / f"{'features' if party == 'client' else 'labels'}.csv").open() as f:
            ids[party] = {row["patient_id"] for row in csv.DictReader(f)}
    shared = sorted(ids["client"] & ids["server"])
    for party in ("client", "server"):
        learned = json.loads((runs / "align" / party / "alignment.json").read_text())
        assert learned.pop("ids") == shared
        assert learned.pop("sha256")
        assert learned == {
            "party": party,
            "aligned": 420,
            "rows": {"client": 500, "server": 489},
            "matched": {"client": 420},
        }


def test_a_party_without_its_file_stops_before_meeting_anyone(tmp_path, capsys):
    argv = ["party", "--rank", "1", "--world-size", "2", "--master-port", str(_port())]
    argv += [*FLAGS, "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: server holds the labels: give its own file, --labels csv:PATH")
    assert not (tmp_path / "run").exists()
