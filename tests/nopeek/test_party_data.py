"""Each party's own data: its view of a data set, its own files keyed by id, the private
alignment of their ids (issue 19). Real processes, each in its own folder, are in
``test_own_data.py``; these are the pieces in one process (the alignment's parties as threads
over queues)."""

from __future__ import annotations

import csv
import importlib.util
import json
import queue
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from nopeek.config import TrainConfig
from nopeek.data.party import (
    aligned_splits,
    party_view,
    read_own,
    roster,
    standardize,
)
from nopeek.errors import ChannelError, ConfigError, DataError
from nopeek.runtime.handshake import LOCAL_FIELDS, SOURCE_FIELDS, fingerprint


def _write(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


# --- a party's view of a built-in data set -----------------------------------------------------
def test_a_party_view_holds_only_its_own_keys():
    from nopeek.training.trainer import build_run

    config = TrainConfig(dataset="digits", topology="vertical", clients=2, max_train=50)
    config = config.resolved()
    dataset = config.load_data()
    _, topology = build_run(config, dataset)
    views = {p: party_view(dataset, topology, p) for p in topology.parties}
    assert {p: sorted(v.train.data) for p, v in views.items()} == {
        "client0": ["x0"],
        "client1": ["x1"],
        "server": ["y"],
    }
    assert torch.equal(views["client1"].test.data["x1"], dataset.test.x[..., 4:])
    assert torch.equal(views["server"].train.y, dataset.train.y)
    assert all(torch.equal(v.aux.ids, dataset.aux.ids) for v in views.values())
    assert views["client0"].class_names == () and views["server"].class_names
    with pytest.raises(DataError, match="this party holds no labels"):
        views["client0"].train.y  # noqa: B018


# --- the split every party derives alone ---------------------------------------------------------
def test_aligned_splits_are_disjoint_cover_everything_and_depend_on_n_and_seed_only():
    train, test, aux = aligned_splits(101, seed=3)
    assert (len(train), len(test), len(aux)) == (60, 21, 20)
    assert sorted(torch.cat([train, test, aux]).tolist()) == list(range(101))
    again = aligned_splits(101, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(again, (train, test, aux)))
    assert not torch.equal(aligned_splits(101, seed=4)[1], test)
    small = aligned_splits(101, seed=3, max_train=10)[0]
    assert len(small) == 10 and set(small.tolist()) <= set(train.tolist())


def test_standardize_gives_each_column_the_same_bits_whoever_holds_it():
    """A whole-matrix reduction rounds a column differently when 4 columns sit beside it than
    when 30 do; each column on its own copy does not."""
    from sklearn.datasets import load_breast_cancer

    x = torch.as_tensor(load_breast_cancer().data[:341], dtype=torch.float32)
    mean, std = standardize(x)
    for lo, hi in [(0, 4), (3, 7), (0, 1), (15, 30)]:
        part_mean, part_std = standardize(x[:, lo:hi].clone())
        assert torch.equal(part_mean, mean[lo:hi]) and torch.equal(part_std, std[lo:hi])


# --- one party's own files -----------------------------------------------------------------------
def _config(**kw) -> TrainConfig:
    return TrainConfig(**({"id_column": "pid", "dataset": ""} | kw))


def test_each_role_reads_only_the_file_it_holds(tmp_path):
    feats = _write(tmp_path / "f.csv", ["pid", "a", "b", "y"], [["p1", 1, 2, 0], ["p2", 3, 4, 1]])
    labels = _write(tmp_path / "l.csv", ["pid", "y"], [["p2", "no"], ["p1", "yes"], ["p3", "no"]])
    plan = roster(_config())
    rows = read_own(_config(dataset=f"csv:{feats}", columns="b,a"), plan, "client")
    assert rows.ids == ("p1", "p2") and rows.columns == ("b", "a") and rows.labels is None
    assert rows.x.tolist() == [[2.0, 1.0], [4.0, 3.0]]
    rows = read_own(_config(labels=f"csv:{labels}", target="y"), plan, "server")
    assert (
        rows.ids == ("p2", "p1", "p3")
        and rows.x is None
        and list(rows.labels) == ["no", "yes", "no"]
    )
    with pytest.raises(ConfigError, match="server holds no features in --topology vanilla"):
        read_own(_config(dataset=f"csv:{feats}", labels=f"csv:{labels}"), plan, "server")
    with pytest.raises(ConfigError, match=r"client holds no labels \(server does\); drop --labels"):
        read_own(_config(dataset=f"csv:{feats}", labels=f"csv:{labels}"), plan, "client")
    with pytest.raises(ConfigError, match="server holds the labels: give its own file"):
        read_own(_config(), plan, "server")
    # vertical with the labels at client0: its features and labels, joined on its own ids
    plan = roster(_config(topology="vertical", label_party="client0"))
    assert plan.holds == {"client0": ("x0", "y"), "client1": ("x1",), "server": ()}
    both = _config(dataset=f"csv:{feats}", labels=f"csv:{labels}", target="y")
    rows = read_own(both, plan, "client0")
    assert rows.ids == ("p1", "p2") and list(rows.labels) == ["yes", "no"]
    assert rows.columns == ("a", "b")  # the --target column is not a feature


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ([["p1", 1], ["p1", 2]], r"sample id 'p1' appears twice in column 'pid' \(lines 2 and 3\)"),
        ([["p1", 1], ["", 2]], "missing value at row 1 \\(line 3\\), column 'pid'"),
        ([["p1", "x"]], "column 'a' is not numeric"),
    ],
)
def test_a_bad_own_file_is_one_line_naming_the_place(tmp_path, rows, match):
    path = _write(tmp_path / "f.csv", ["pid", "a"], rows)
    with pytest.raises(DataError, match=match):
        read_own(_config(dataset=f"csv:{path}"), roster(_config()), "client")


def test_own_file_options_are_checked_before_anything_runs(tmp_path):
    path = _write(tmp_path / "f.csv", ["pid", "a"], [["p1", 1]])
    with pytest.raises(DataError, match="has no --id-column 'id'; the columns are: pid, a"):
        read_own(_config(id_column="id", dataset=f"csv:{path}"), roster(_config()), "client")
    with pytest.raises(DataError, match="has no --columns 'b'"):
        read_own(_config(dataset=f"csv:{path}", columns="b"), roster(_config()), "client")
    for bad, match in [
        ({"labels": "csv:l.csv", "id_column": None}, "--labels needs --id-column"),
        ({"columns": "a", "id_column": None, "dataset": "digits"}, "--columns needs --id-column"),
        ({"dataset": "npz:x.npz"}, "--dataset npz:x.npz: files keyed by --id-column are csv"),
    ]:
        with pytest.raises(ConfigError, match=match):
            _config(**bad).validate()
    with pytest.raises(ConfigError, match="with --topology vanilla or vertical, not u-shaped"):
        roster(_config(topology="u-shaped"))
    with pytest.raises(ConfigError, match="one party's own label file"):
        _config(dataset=f"csv:{path}", labels=f"csv:{path}").load_data()


def test_the_fingerprint_leaves_each_partys_files_out_and_compares_the_agreed_data():
    mine = _config(dataset="csv:/site_a/x.csv", columns="a,b").to_dict()
    theirs = _config(labels="csv:/site_b/y.csv", target="outcome", id_column="patient").to_dict()
    agreed = {"samples": 80, "sha256": "ab"}
    assert fingerprint(mine, resume=False, data=agreed) == fingerprint(
        theirs, resume=False, data=agreed
    )
    assert {"labels", "id_column", "columns"} <= LOCAL_FIELDS
    fp = fingerprint(mine, resume=False, data=agreed)
    assert fp["data"] == agreed and not (SOURCE_FIELDS | LOCAL_FIELDS) & set(fp)


# --- the alignment, its parties as threads --------------------------------------------------------
needs_psi = pytest.mark.skipif(
    importlib.util.find_spec("private_set_intersection") is None,
    reason="openmined-psi is not installed (pip install 'nopeek[deploy]')",
)


class _Line:
    """One party's end of an in-process text channel (the ``send_text``/``recv_text`` of the
    distributed channels); every message passes through ``json``, as on the wire."""

    def __init__(self, me: str, boxes: dict, log: list) -> None:
        self.me, self.boxes, self.log = me, boxes, log

    def send_text(self, kind, receiver, text):
        self.log.append((self.me, receiver, text))
        self.boxes[(self.me, receiver)].put(text)

    def recv_text(self, sender):
        return json.loads(self.boxes[(sender, self.me)].get(timeout=30))


def _run_parties(ids: dict[str, list[str]], label: str, fn=None):
    """``align`` at every party of ``ids`` at once; {party: Alignment or the exception}."""
    from nopeek.runtime.align import align

    parties = list(ids)
    data = [p for p in parties if ids[p]]
    boxes = {(a, b): queue.Queue() for a in parties for b in parties if a != b}
    log: list = []
    out: dict = {}

    def run(me):
        try:
            out[me] = (fn or align)(_Line(me, boxes, log), me, label, data, parties, ids[me])
        except Exception as exc:  # the test looks at it
            out[me] = exc

    threads = [threading.Thread(target=run, args=(p,)) for p in parties]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out, log


@needs_psi
def test_psi_alignment_tells_each_party_only_what_it_must_learn():
    server = [f"P{i:03d}" for i in range(20, 100)]  # the labels: 80 patients
    client0 = [f"P{i:03d}" for i in range(0, 70)][::-1]  # features, another order
    client1 = [f"P{i:03d}" for i in range(10, 90, 2)] + ["Z1"]
    got, log = _run_parties({"client0": client0, "client1": client1, "server": server}, "server")
    want = sorted(set(server) & set(client0) & set(client1))
    assert all(got[p].ids == tuple(want) for p in got), got
    assert {p: got[p].size for p in got} == {p: len(want) for p in got}
    assert got["client0"].rows == {"client0": 70, "server": 80}  # not client1's count
    assert got["client0"].matched == {"client0": 50}
    assert got["server"].rows == {"client0": 70, "client1": 41, "server": 80}
    assert got["server"].matched == {"client0": 50, "client1": 35}
    assert len({a.sha256 for a in got.values()}) == 1
    # no id that a receiver does not hold itself crosses in the clear: every text on the wire
    # names only ids that both its sender and receiver hold (PSI messages are ciphertexts)
    held = {"client0": set(client0), "client1": set(client1), "server": set(server)}
    everything = set(client0) | set(client1) | set(server)
    for sender, receiver, text in log:
        named = {i for i in everything if json.dumps(i) in text}
        assert named <= held[sender] & held[receiver], (sender, receiver, named - held[receiver])
    assert got["server"].to_json()["ids"] == want
    assert set(got["client0"].to_json()) == {"party", "aligned", "rows", "matched", "sha256", "ids"}


@needs_psi
def test_a_party_without_data_learns_only_the_number_of_aligned_samples():
    ids = {"client0": ["a", "b", "c"], "client1": ["b", "c", "d"], "server": []}
    got, _ = _run_parties(ids, "client0")
    assert got["server"].ids is None and got["server"].size == 2
    assert got["server"].sha256 == got["client1"].sha256
    assert got["client1"].ids == ("b", "c")


@needs_psi
def test_the_label_party_refuses_ids_outside_its_own_set():
    """A client that claims an id the label party does not hold (it did not come out of the
    PSI) stops the alignment."""
    from nopeek.runtime import align as mod

    real = mod._send

    def lying(channel, peer, message, what):
        if message.get("align") == "matched":
            message = dict(message, ids=[*message["ids"], "NOT-THERE"])
        real(channel, peer, message, what)

    mod._send = lying
    try:
        got, _ = _run_parties({"client": ["a", "b"], "server": ["a", "b", "c"]}, "server")
    finally:
        mod._send = real
    assert isinstance(got["server"], ChannelError)
    assert "client named ids outside the PSI result" in str(got["server"])


def test_a_peer_started_without_id_column_is_named():
    from nopeek.runtime.align import _recv

    class Said:
        def recv_text(self, sender):
            return {"settings": {}, "epoch": 0}

    with pytest.raises(ConfigError, match="client was started without --id-column"):
        _recv(Said(), "client", "request", {})


def test_without_openmined_psi_the_alignment_names_the_extra(monkeypatch):
    from nopeek.runtime.align import _psi

    monkeypatch.setitem(sys.modules, "private_set_intersection.python", None)
    with pytest.raises(ConfigError, match=r"needs openmined-psi; .*pip install 'nopeek\[deploy\]'"):
        _psi()


def test_in_process_keyed_file_trains_on_rows_in_id_order(tmp_path):
    """``nopeek train --id-column``: one file, rows keyed by id, split by id order and seed."""
    from sklearn.datasets import load_breast_cancer

    from nopeek.data.party import load_keyed

    b = load_breast_cancer()
    rows = [[f"P{i:03d}", *b.data[i, :4].tolist(), int(b.target[i])] for i in range(60)]
    path = _write(tmp_path / "j.csv", ["pid", "a", "b", "c", "d", "y"], rows[::-1])
    ds = load_keyed(str(path), id_column="pid", target="y", seed=0)
    assert (len(ds.train), len(ds.test), len(ds.aux)) == (36, 12, 12)
    train = aligned_splits(60, seed=0)[0]
    want = torch.as_tensor(np.asarray(b.data[:60, :4], dtype=np.float32))[train]
    mean, std = standardize(want)
    assert torch.equal(ds.train.x, (want - mean) / std)
    assert torch.equal(ds.train.ids, train) and ds.class_names == ("0", "1")
