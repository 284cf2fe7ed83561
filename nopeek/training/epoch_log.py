"""What a run reports while it runs, once per epoch: ``metrics.csv`` in the run folder,
TensorBoard scalars (``nopeek train --tensorboard DIR``) and, where stderr is not a terminal,
one progress line per epoch instead of a progress bar.

``metrics.csv`` has a header and one row per finished epoch: ``epoch`` and the per-epoch
curves of ``metrics.json`` (``train_loss``, ``test_accuracy``: ``<name>_per_epoch`` there),
each number written as Python's ``repr`` so that it reads back to the same float. The first
epoch's row comes with the header; every row is appended as one full line in one write and
flushed, so a crash never leaves half a line. A resumed run rewrites the file (atomically) from
its checkpoint's history, dropping the rows of epochs after the checkpoint. In a distributed
run the party that writes ``metrics.json`` (the label party) writes it.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nopeek.errors import ConfigError
from nopeek.io import atomic_write_bytes, output_error

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

TENSORBOARD_EXTRA = "pip install 'nopeek[tensorboard]'"


def check_tensorboard() -> None:
    """Refuse ``--tensorboard`` in one line when the ``tensorboard`` package is missing or
    cannot be loaded (e.g. built for another protobuf), before anything runs."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        from torch.utils.tensorboard.summary import scalar  # noqa: F401 (loads the protobufs)
    except ImportError:
        raise ConfigError(
            f"--tensorboard needs the tensorboard package, which is not installed; "
            f"{TENSORBOARD_EXTRA}, or train without --tensorboard (metrics.csv has the curves)"
        ) from None
    except Exception as exc:  # a broken install: name it, one line
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"--tensorboard: the installed tensorboard cannot be loaded ({reason}); "
            f"reinstall it with pip install -U 'nopeek[tensorboard]', or train without it"
        ) from None


def _cell(value: Any) -> str:
    """A CSV cell: integers as they are, floats as ``repr`` (reads back bit for bit)."""
    return repr(float(value)) if isinstance(value, float) else str(value)


def _line(values: list[Any]) -> str:
    return ",".join(_cell(v) for v in values) + "\n"


def history_rows(history: dict[str, list[float]]) -> list[dict[str, Any]]:
    """One row per epoch of a run's ``history`` (name -> per-epoch values).

    >>> history_rows({"train_loss": [0.5, 0.25], "test_accuracy": [0.8, 0.9]})
    [{'epoch': 1, 'train_loss': 0.5, 'test_accuracy': 0.8}, {'epoch': 2, 'train_loss': 0.25, 'test_accuracy': 0.9}]
    """  # noqa: E501
    n = min((len(v) for v in history.values()), default=0)
    return [{"epoch": i + 1, **{k: v[i] for k, v in history.items()}} for i in range(n)]


class MetricsCsv:
    """``metrics.csv`` of a run folder: the header once, then one appended line per epoch."""

    def __init__(self, path: str | Path, columns: list[str]) -> None:
        self.path, self.columns = Path(path), ["epoch", *columns]

    def restart(self, rows: list[dict[str, Any]]) -> None:
        """Start over with ``rows`` (the epochs a resumed run keeps), written atomically with the
        header; none: no file until the first row."""
        if not rows:
            self.path.unlink(missing_ok=True)
            return
        text = _line(self.columns) + "".join(_line([r[c] for c in self.columns]) for r in rows)
        atomic_write_bytes(self.path, text.encode())

    def append(self, row: dict[str, Any]) -> None:
        """Append ``row`` as one full line (after the header, for the first row) and flush."""
        text = _line([row[c] for c in self.columns])
        try:
            if not self.path.is_file() or self.path.stat().st_size == 0:
                text = _line(self.columns) + text
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
        except OSError as exc:
            raise output_error(exc, self.path) from None


def _writer(log_dir: Path, start_epoch: int) -> SummaryWriter:
    """A TensorBoard ``SummaryWriter`` into ``log_dir``; a resumed run hides the old events of
    the epochs it trains again (``purge_step``)."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir), purge_step=start_epoch + 1 if start_epoch else None)


class EpochLog:
    """Every per-epoch report of one run; a context manager that closes the TensorBoard file.

    ``csv_path``/``tensorboard``: None to skip; ``lines``: print one progress line per epoch to
    stderr (used where stderr is not a terminal, and the run is not quiet).
    """

    def __init__(
        self,
        history: dict[str, list[float]],
        *,
        epochs: int,
        csv_path: Path | None = None,
        tensorboard: Path | None = None,
        lines: bool = False,
    ) -> None:
        self.epochs, self.lines = epochs, lines
        start = len(history_rows(history))
        self.csv = MetricsCsv(csv_path, list(history)) if csv_path is not None else None
        if self.csv is not None:
            self.csv.restart(history_rows(history))
        self.writer = _writer(tensorboard, start) if tensorboard is not None else None
        self.began = time.perf_counter()

    def write(self, epoch: int, values: dict[str, float]) -> None:
        """Report the finished ``epoch`` (1-based) with its ``values`` (name -> number)."""
        row = {"epoch": epoch, **values}
        if self.csv is not None:
            self.csv.append(row)
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, global_step=epoch)
            self.writer.flush()
        if self.lines:
            self._print(epoch, values)

    def _print(self, epoch: int, values: dict[str, float]) -> None:
        """``epoch 3/30  train_loss 0.4123  test_accuracy 0.9130  (1.2 s)`` on stderr."""
        now = time.perf_counter()
        parts = [f"epoch {epoch}/{self.epochs}"]
        parts += [f"{k} {v:.4f}" for k, v in values.items() if math.isfinite(v)]
        parts.append(f"({now - self.began:.1f} s)")
        self.began = now
        print("  ".join(parts), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> EpochLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
