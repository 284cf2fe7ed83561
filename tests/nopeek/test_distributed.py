"""Distributed runs with real processes on 127.0.0.1: every party its own process, over gloo.

References are independent of the distributed runtime: the in-process run of the same flags
(``nopeek train`` in this process, one thread, as the children) for metrics and final weights;
the tensors actually handed to ``torch.distributed.isend`` (logged by a wrapper in the children)
and the parties' own wire logs for the byte counts; hand-made headers for the validation.

Start-up (importing torch) is most of a child's life, so all children start at once (the
``cluster`` fixture, in ``_distributed_plan.py``, shared with ``test_distributed_faults.py``: three
drivers and torchrun) and each driver runs one party of many runs in
turn (``DRIVER``: one ``nopeek party`` command line after the other through
:func:`nopeek.cli.main.main`, each with its own stderr, exit status and duration, as if it were
a process of its own); a party that gets killed or stopped is the last job of its driver. The
failure cases end within their deadlines (``--timeout``), and every wait of this module has one
too, so a hang fails the test instead of hanging CI.
The drivers, the sender and the waits are in ``_cluster.py``; the header checks that need no
process are in ``test_wire.py``.
"""

from __future__ import annotations

import re
import shutil

import pytest
import torch

from nopeek.cli.main import main
from nopeek.runtime.channel import ACTIVATION, GRADIENT
from tests.nopeek._distributed_plan import (
    EPOCHS,
    TOPOLOGIES,
)
from tests.nopeek._run_checks import (
    _label_dir,
    _load,
    _metrics,
    _one_line,
    _same_metrics,
    _same_weights,
)
from tests.nopeek._wire_helpers import HEADER_BYTES


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
