"""Comparisons of a distributed run with its in-process reference, for test_distributed.py."""

from __future__ import annotations

import json
from pathlib import Path

import torch

NOT_COMPARED = {"train_seconds", "wire_bytes_total", "payload_bytes_total"}


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
    """A checkpoint as nopeek reads it (its wire records decoded into tuples)."""
    from nopeek.rundir import checkpoint

    return checkpoint.read(path)


def _same_weights(run: Path, reference: Path, parties: list[str]) -> None:
    """Each party's own checkpoint holds only its own segments, bit-equal to the reference's."""
    want = _load(reference / "checkpoint.pt")
    for party in parties:
        got = _load(run / party / "checkpoint.pt")
        assert set(got["parties"]) == {party}, f"{party}'s checkpoint holds other parties"
        assert got["epoch"] == want["epoch"]
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
