"""Read the torchvision image data sets (MNIST, Fashion-MNIST, CIFAR-10) into tensors in bulk.

Used by :mod:`nopeek.data.bundled`: it knows where each data set lives under a data root, turns
torchvision's ``RuntimeError``/parse errors into one-line :class:`~nopeek.errors.DataError`
messages, and converts the whole ``.data``/``.targets`` arrays at once (no per-item loop).

CIFAR-10 is always read through torchvision with its md5 check on: files that fail the check are
reported as corrupted, never read around. (Tests write tiny files in the real pickle format and
patch torchvision's ``check_integrity`` for the duration of the test.)
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from nopeek.errors import DataError

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
_READ_ERRORS = (
    RuntimeError,
    OSError,
    ValueError,
    TypeError,
    AssertionError,
    EOFError,
    KeyError,
    IndexError,
    pickle.UnpicklingError,
)


@dataclass(frozen=True)
class VisionSpec:
    """Where a torchvision data set lives under a data root and what it holds."""

    cls_name: str  # attribute of torchvision.datasets
    folder: str  # sub-folder of the data root holding ``files``
    files: tuple[str, ...]
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...] | None  # None: take torchvision's ``.classes``


VISION_SPECS: dict[str, VisionSpec] = {
    "mnist": VisionSpec("MNIST", "MNIST/raw", _MNIST_FILES, (1, 28, 28), tuple("0123456789")),
    "fashion-mnist": VisionSpec(
        "FashionMNIST", "FashionMNIST/raw", _MNIST_FILES, (1, 28, 28), None
    ),
    "cifar10": VisionSpec("CIFAR10", "cifar-10-batches-py", _CIFAR_FILES, (3, 32, 32), None),
}


@dataclass(frozen=True)
class VisionArrays:
    """torchvision's train and test sets as tensors; x float32 in [0, 1], y int64."""

    x_train: Tensor  # (N_train, C, H, W)
    y_train: Tensor  # (N_train,)
    x_test: Tensor  # (N_test, C, H, W)
    y_test: Tensor  # (N_test,)
    class_names: tuple[str, ...]


def _one_line(err: BaseException) -> str:
    """``Type: first line of the message``, cut at a word boundary (about 160 characters)."""
    from nopeek.schema import brief

    text = brief(err, 140)
    return type(err).__name__ if text == type(err).__name__ else f"{type(err).__name__}: {text}"


def missing_files(spec: VisionSpec, root: Path) -> list[str]:
    """The files of ``spec`` that are not regular files under ``root``."""
    return [f for f in spec.files if not (root / spec.folder / f).is_file()]


def _check_root(name: str, spec: VisionSpec, data_root: str | Path | None, download: bool) -> Path:
    """Resolve the data root, raising ``DataError`` when it cannot hold the files."""
    where = f"{spec.folder}/{spec.files[0]}"
    if data_root is None:
        raise DataError(
            f"{name} needs --data-root DIR containing {where} (and the other {name} files); "
            "pass --download to fetch it"
        )
    root = Path(data_root).expanduser()
    if download:
        root.mkdir(parents=True, exist_ok=True)
        return root
    if not root.exists():
        raise DataError(
            f"data root {root} does not exist; create it with {where} inside, "
            "or pass --download to fetch it"
        )
    if not root.is_dir():
        raise DataError(f"data root {root} is not a directory; pass the folder containing {where}")
    if not any(root.iterdir()):
        raise DataError(
            f"data root {root} is empty; put the {name} files in {root / spec.folder} "
            "or pass --download to fetch them"
        )
    missing = missing_files(spec, root)
    if missing:
        raise DataError(
            f"{name} files not found in {root / spec.folder}: {', '.join(missing)}; "
            "put them there or pass --download to fetch them"
        )
    return root


def _explain(name: str, spec: VisionSpec, root: Path, download: bool, err: Exception) -> DataError:
    """Turn an error raised while downloading or reading into a one-line ``DataError``."""
    folder = root / spec.folder
    if missing_files(spec, root):
        if download:
            return DataError(
                f"downloading {name} into {root} failed ({_one_line(err)}); "
                f"check the network or put the files in {folder} yourself"
            )
        return DataError(f"{name} files not found in {folder}; put them there or pass --download")
    if "corrupted" in str(err):
        return DataError(
            f"{name} files in {folder} failed torchvision's md5 check (corrupted or "
            "not the official release); delete the folder and pass --download"
        )
    return DataError(
        f"could not read {name} files in {folder} ({_one_line(err)}); "
        "delete the folder and pass --download to fetch them again"
    )


def _to_images(data: object, input_shape: tuple[int, ...]) -> Tensor:
    """uint8 images (N, H, W) or (N, H, W, C) -> float32 (N, C, H, W) in [0, 1]."""
    t = torch.as_tensor(np.asarray(data))
    if t.ndim == 3:
        t = t.unsqueeze(1)
    elif t.ndim == 4 and t.shape[-1] == input_shape[0]:
        t = t.permute(0, 3, 1, 2)
    if tuple(t.shape[1:]) != input_shape:
        raise DataError(
            f"images have shape {tuple(t.shape[1:])}, expected {input_shape}; "
            "delete the data folder and pass --download to fetch it again"
        )
    return t.to(torch.float32).div_(255.0).contiguous()


def read_vision(name: str, data_root: str | Path | None, download: bool) -> VisionArrays:
    """Read torchvision's train and test sets of ``name`` (a key of ``VISION_SPECS``)."""
    spec = VISION_SPECS[name]
    root = _check_root(name, spec, data_root, download)
    import torchvision.datasets as tvd  # on use: importing torchvision costs about a second

    cls = getattr(tvd, spec.cls_name)
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=False)
        x_train = _to_images(train.data, spec.input_shape)
        x_test = _to_images(test.data, spec.input_shape)
    except DataError:
        raise
    except _READ_ERRORS as err:
        raise _explain(name, spec, root, download, err) from err
    names = spec.class_names or tuple(str(c) for c in train.classes)
    return VisionArrays(
        x_train=x_train,
        y_train=torch.as_tensor(np.asarray(train.targets), dtype=torch.int64),
        x_test=x_test,
        y_test=torch.as_tensor(np.asarray(test.targets), dtype=torch.int64),
        class_names=names,
    )
