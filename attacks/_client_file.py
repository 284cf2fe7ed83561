"""Read what a user exports from their own deployment, without unpickling arbitrary objects.

- ``.pt2`` (``torch.export.save``): :func:`torch.export.load` reads a zip of JSON (the graph)
  and raw tensor bytes, but it falls back to ``torch.load(weights_only=False)`` for weights or
  constants saved as pickles, to ``pickle.loads`` for opaque constants and to the TorchScript
  unpickler for custom objects. :func:`load_client_model` therefore opens the archive first and
  loads every pickled tensor payload with ``torch.load(weights_only=True)``; an archive holding
  custom or opaque objects (or in the pre-2.7 layout) is refused before ``torch.export.load``
  runs, so the fallbacks never fire.
- ``.pt`` (TorchScript, ``torch.jit.trace(...).save`` / ``torch.jit.script(...).save``):
  :func:`torch.jit.load` uses TorchScript's own (C++) unpickler, which rebuilds only tensors and
  TorchScript types whose code it compiles from the archive's ``code/`` folder; it never imports
  Python globals. A ``.pt`` without that folder is a ``torch.save`` pickle and is refused
  without being opened by any unpickler.
- recorded activations (``.npz`` read with ``allow_pickle=False``, or a ``.pt`` read with
  ``torch.load(weights_only=True)``): ``activations`` (M, ...) and ``ids`` (M,).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch import Tensor, nn

from nopeek.errors import CheckpointError, ConfigError
from nopeek.schema import brief

_EXPORT_FIX = "save it with torch.export.save(torch.export.export(segment, (x,)), 'client.pt2')"
_SCRIPT_FIX = "save it with torch.jit.trace(segment, x).save('client.pt')"


class FrozenSegment(nn.Module):
    """A loaded segment, kept in the mode it was exported in.

    An exported program's ``.module()`` refuses ``.eval()``/``.train()`` (its BatchNorm and
    dropout behaviour was fixed at export time), so this wrapper's ``train(mode)`` only sets its
    own flag. ``forward``: (B, *input_shape) -> (B, *cut_shape).
    """

    def __init__(self, inner: nn.Module, fmt: str) -> None:
        super().__init__()
        self.inner, self.format = inner, fmt

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x)

    def train(self, mode: bool = True) -> FrozenSegment:
        self.training = mode
        return self

    def copy(self) -> FrozenSegment:
        """An independent copy (its own leaf parameters; TorchScript goes through its archive,
        as a deep copy of a loaded ScriptModule shares non-leaf parameters)."""
        if self.format != "torchscript":
            return copy.deepcopy(self)
        buffer = io.BytesIO()
        torch.jit.save(self.inner, buffer)
        buffer.seek(0)
        return FrozenSegment(torch.jit.load(buffer, map_location="cpu").eval(), self.format)


def _existing(path: str | Path, flag: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{flag} {path}: no such file; give the path of the exported file")
    return path


def _zip_names(path: Path, flag: str, what: str, fix: str) -> list[str]:
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{flag} {path} is not {what} and is not loaded; {fix}")
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def _check_pt2(path: Path, flag: str) -> None:
    """Refuse an archive whose loading would unpickle anything but plain tensors."""
    names = _zip_names(path, flag, "a torch.export archive", _EXPORT_FIX)
    inner = {str(PurePosixPath(*PurePosixPath(n).parts[1:])): n for n in names}
    if not any(k.startswith("models/") and k.endswith(".json") for k in inner):
        raise CheckpointError(f"{flag} {path} holds no exported program; {_EXPORT_FIX}")
    with zipfile.ZipFile(path) as archive:
        for key, name in inner.items():
            folder = key.rpartition("/")[0]
            if key.endswith("_config.json") and folder in ("data/weights", "data/constants"):
                config = _config(_read(archive, name, path, flag), name, path, flag)
                for fqn, meta in config.items():
                    file = meta.get("path_name", "")
                    if not file.startswith(("weight_", "tensor_")):
                        raise CheckpointError(
                            f"{flag} {path} holds a non-tensor constant {fqn!r} ({file}), which "
                            "loading would unpickle; export a segment with tensor state only"
                        )
                    if meta.get("use_pickle"):
                        if f"{folder}/{file}" not in inner:
                            raise _damaged(path, flag, f"{name} names {file}, which it lacks")
                        data = _read(archive, inner[f"{folder}/{file}"], path, flag)
                        _tensor_only(data, path, flag)
            elif key.startswith("data/sample_inputs/"):
                _tensor_only(_read(archive, name, path, flag), path, flag)
            elif key.startswith(("data/weights/", "data/constants/")) and key.endswith(".pt"):
                raise CheckpointError(
                    f"{flag} {path} is in the pre-2.7 torch.export layout, which loads by "
                    f"unpickling; re-export it with this torch: {_EXPORT_FIX}"
                )


def _read(archive: zipfile.ZipFile, name: str, path: Path, flag: str) -> bytes:
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:  # a bad CRC, a truncated member
        raise _damaged(path, flag, f"{name}: {brief(exc)}") from None


def _config(data: bytes, name: str, path: Path, flag: str) -> dict:
    """The ``config`` of a weights/constants ``_config.json``: fqn -> {path_name, use_pickle}."""
    try:
        config = json.loads(data).get("config", {})
    except (ValueError, AttributeError) as exc:  # not JSON, or JSON but not an object
        raise _damaged(path, flag, f"{name} is not a JSON object: {brief(exc)}") from None
    if not isinstance(config, dict) or not all(isinstance(m, dict) for m in config.values()):
        raise _damaged(path, flag, f"{name} does not map names to files")
    return config


def _damaged(path: Path, flag: str, why: str) -> CheckpointError:
    return CheckpointError(f"{flag} {path} is damaged ({why}); re-export it: {_EXPORT_FIX}")


def _tensor_only(data: bytes, path: Path, flag: str) -> None:
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickler refusal means "not tensors only"
        raise CheckpointError(
            f"{flag} {path} holds a pickled payload that is not plain tensors ({brief(exc)}); "
            "export a segment with tensor state only"
        ) from None


def _check_torchscript(path: Path, flag: str) -> None:
    names = _zip_names(path, flag, "a TorchScript archive (a plain pickle?)", _SCRIPT_FIX)
    parts = [PurePosixPath(n).parts for n in names]
    if not any(len(p) > 2 and p[1] == "code" for p in parts):
        raise CheckpointError(
            f"{flag} {path} is a plain pickle (torch.save), not TorchScript, and is not "
            f"loaded; {_SCRIPT_FIX}"
        )


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _held(logger: str):
    """Keep a library's log records (its warnings would add lines to a one-line error)."""
    log, records = logging.getLogger(logger), _Records()
    saved = log.handlers, log.propagate, log.level
    log.handlers, log.propagate, log.level = [records], False, logging.WARNING
    try:
        yield records
    finally:
        log.handlers, log.propagate, log.level = saved


def load_client_model(path: str | Path, *, flag: str = "--client-model") -> FrozenSegment:
    """The client segment exported to ``path`` (``.pt2``: torch.export; ``.pt``: TorchScript),
    on CPU; refused in one line if loading it could run arbitrary unpickling."""
    path = _existing(path, flag)
    suffix = path.suffix.lower()
    if suffix not in (".pt2", ".pt"):
        raise ConfigError(
            f"{flag} {path}: expected a .pt2 (torch.export) or .pt (TorchScript) file; "
            f"{_EXPORT_FIX}"
        )
    if suffix == ".pt2":
        _check_pt2(path, flag)
        try:
            with _held("torch.export") as held:  # it logs the cause, then raises another error
                program = torch.export.load(str(path))
            module = program.module()
        except Exception as exc:  # a damaged archive, or one of another torch, fails many ways
            logged = [r.exc_info[1] for r in held.records if r.exc_info]
            cause = logged[-1] if logged else exc
            raise CheckpointError(
                f"{flag} {path} cannot be loaded by torch {torch.__version__} ({brief(cause)}); "
                f"re-export it with this torch: {_EXPORT_FIX}"
            ) from None
        return FrozenSegment(module, "torch.export")
    _check_torchscript(path, flag)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise CheckpointError(
            f"{flag} {path} cannot be loaded ({brief(exc)}); re-save it"
        ) from None
    return FrozenSegment(module.eval(), "torchscript")


def load_activations(path: str | Path, *, flag: str = "--activations") -> tuple[Tensor, Tensor]:
    """``activations`` (M, ...) float32 and ``ids`` (M,) int64 recorded at the cut."""
    path = _existing(path, flag)
    fix = "save a dict with 'activations' (M, ...) and 'ids' (M,) as .npz or with torch.save"
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as data:
                found = {k: torch.from_numpy(data[k]) for k in data.files}
        else:
            found = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{flag} {path} cannot be read ({brief(exc)}); {fix}") from None
    if not isinstance(found, dict) or not {"activations", "ids"} <= set(found):
        raise CheckpointError(f"{flag} {path} lacks 'activations' and 'ids'; {fix}")
    z, ids = found["activations"], found["ids"]
    if not isinstance(z, Tensor) or not isinstance(ids, Tensor):
        raise CheckpointError(f"{flag} {path}: 'activations' and 'ids' must be arrays; {fix}")
    if z.ndim < 2 or ids.shape != (len(z),) or ids.is_floating_point() or ids.is_complex():
        raise CheckpointError(
            f"{flag} {path}: activations {tuple(z.shape)} and ids {tuple(ids.shape)} must be "
            f"(M, ...) and (M,) integers; {fix}"
        )
    ids = ids.long()
    if len(torch.unique(ids)) != len(ids):
        raise CheckpointError(f"{flag} {path} repeats sample ids; give each victim once")
    return z.float(), ids
