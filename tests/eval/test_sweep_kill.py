"""Fault injection with a real kill: ``nopeek sweep`` killed (SIGKILL) at a seeded random point.

Run again with the same command, the sweep must finish with exactly the results (timings
aside) and the weights of an uninterrupted sweep, reusing finished runs, resuming or retraining
the interrupted one, and leave no temporaries. The killed sweep is a real child process (see
the ``kill_child`` fixture); the uninterrupted sweep and the rerun run in this process through
:func:`nopeek.cli.main.main`, with the same arguments.
"""

import csv
import json
import random
import signal

import torch

from nopeek.cli.main import main
from nopeek.io import TEMP_NAME

SWEEP = ["sweep", "--dataset", "digits", "--epochs", "2", "--max-train", "200", "--alpha", "0,1"]
SWEEP += ["--seeds", "0", "--attack", "none", "--dcor-samples", "32", "--record-samples", "32"]
SWEEP += ["--device", "cpu", "--quiet"]
SEED = 1  # of the kill point: after the 2nd checkpoint (run 1's last epoch), 0.29 epochs on


def _rows(rows: list[dict], out) -> list[dict]:
    """Result rows without timings, the sweep's own path replaced by ``OUT``."""
    return [
        {k: v.replace(str(out), "OUT") if isinstance(v, str) else v for k, v in row.items()}
        | {k: None for k in row if k.endswith("_seconds")}
        for row in rows
    ]


def _results(out) -> tuple[list[dict], list[dict]]:
    """(results.csv rows, results.json rows) of sweep ``out``, normalised by :func:`_rows`."""
    with open(out / "results.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    return _rows(table, out), _rows(json.loads((out / "results.json").read_text()), out)


def _weights(run) -> list[bytes]:
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    return [
        t.numpy().tobytes() for sds in state["parties"].values() for sd in sds for t in sd.values()
    ]


def test_a_killed_sweep_run_again_gives_the_uninterrupted_results(tmp_path, kill_child):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main([*SWEEP, "--out", str(full)]) == 0
    seconds = json.loads((full / "results.json").read_text())[0]["train_seconds"]
    rng = random.Random(SEED)
    # each of the 2 runs writes 3 checkpoints (2 epochs, then the finished run's): kill after
    # the 1st to 4th of them, up to half an epoch later (mid-epoch, mid-finish, between runs)
    count, delay = rng.randint(1, 4), rng.uniform(0, 0.5) * seconds / 2
    argv = [*SWEEP, "--out", cut]
    status, err = kill_child(
        argv, root=cut, pattern="runs/*/checkpoint.pt", count=count, delay=delay
    )
    assert status == -signal.SIGKILL, f"the sweep ended by itself ({status}) before its kill: {err}"
    assert not (cut / "results.csv").exists()
    assert main([*SWEEP, "--out", str(cut)]) == 0
    assert _results(cut) == _results(full)
    runs = sorted(p.name for p in (full / "runs").iterdir())
    assert runs == sorted(p.name for p in (cut / "runs").iterdir()) and len(runs) == 2
    for name in runs:
        assert _weights(cut / "runs" / name) == _weights(full / "runs" / name), name
    leftovers = [p for p in cut.rglob(".*") if TEMP_NAME.match(p.name) or "nopeek-" in p.name]
    leftovers += list(cut.parent.glob(f".{cut.name}.nopeek-*"))
    assert leftovers == []
