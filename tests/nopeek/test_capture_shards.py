"""The capture shards of a checkpoint (nopeek.rundir.checkpoint.save): what a finished run keeps
of them, in one process and at a distributed party."""

from types import SimpleNamespace

import pytest
import torch

from nopeek.rundir import checkpoint
from nopeek.runtime.channel import Capture, WireRecord


class _Runner:
    """The parts of a Runner that save() reads: its captures, their shards, its state."""

    def __init__(self, distributed: bool) -> None:
        self.distributed, self.capture_files = distributed, []
        self.wire = SimpleNamespace(captures=[])

    def capture(self, step: int) -> None:
        rec = WireRecord("conv2", "backward", "train", 0, step, (2, 3), "float32", 24)
        self.wire.captures.append(Capture(rec, torch.full((2, 3), float(step)), torch.arange(2)))

    def state_dict(self, *, captures: bool) -> dict:
        assert not captures  # save() keeps them in shards
        files = [list(f) for f in self.capture_files]
        return {"epoch": 0, "parties": {}, "captures": [], "capture_files": files}


@pytest.mark.parametrize("distributed", [False, True])
def test_a_finished_run_keeps_its_shards_only_at_a_distributed_party(tmp_path, distributed):
    runner = _Runner(distributed)
    runner.capture(0)
    checkpoint.save(tmp_path, runner, 1)
    runner.capture(1)
    checkpoint.save(tmp_path, runner, 2)
    assert runner.capture_files == [("00000000-00000001.pt", 1), ("00000001-00000002.pt", 1)]
    runner.capture(2)  # the last step's inference messages: in observations.pt, not a shard
    checkpoint.save(tmp_path, runner, 2, captures=False)
    saved = torch.load(tmp_path / checkpoint.FILENAME, weights_only=True)["capture_files"]
    # a distributed party restarted with the others after it finished rebuilds the same
    # observations from its shards; a run in one process is never restarted once finished
    assert (len(saved) == 2) == distributed == (tmp_path / checkpoint.SHARDS).is_dir()


def test_the_wire_records_are_saved_as_text_and_read_back_as_records():
    """The checkpoint holds the wire log as one JSON text (one object for torch's pickler, not a
    dozen a record); read() gives back tuples that rebuild the same WireRecords."""
    records = [
        WireRecord("conv2", "forward", "train", 0, 3, (64, 8), "float32", 2048, "client"),
        WireRecord(
            "conv2", "backward", "eval", 1, 0, (5,), "int8", 5, "server", "client", "g", "i8"
        ),
    ]
    state = {"epoch": 1, "parties": {}, "wire_records": [r.row() for r in records]}
    saved = checkpoint.to_file(state)
    assert isinstance(saved["wire_records"], str)
    assert checkpoint.from_file(saved)["wire_records"] == state["wire_records"]
    back = checkpoint._records_from_text(saved["wire_records"])
    assert [WireRecord(*row) for row in back] == records
    assert checkpoint._records_from_text("[[1, 2") == "[[1, 2"  # for the schema check to name
