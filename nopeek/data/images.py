"""Reading a torchvision ``ImageFolder`` layout (``ROOT/<class>/<image>``) without torchvision's
dataset machinery: the sorted file list, one common mode and size, and the pixels.

Names starting with ``.`` are skipped; alpha channels are dropped; 16-bit and float images are
refused (their scaling to [0, 1] is ambiguous).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from nopeek.errors import DataError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""What torchvision's ``ImageFolder`` reads."""
_GREY = frozenset({"1", "L", "LA"})
_COLOUR = frozenset({"RGB", "RGBA", "P", "PA", "CMYK", "YCbCr"})


def read_pixels(files: list[tuple[Path, int]], mode: str, size: tuple[int, int]) -> Tensor:
    """The images ``files`` converted to ``mode`` ("L" or "RGB") and ``size`` (width, height):
    (N, C, H, W) float32 in [0, 1]."""
    from PIL import Image

    pixels = np.empty((len(files), size[1], size[0], 1 if mode == "L" else 3), dtype=np.uint8)
    for i, (file, _) in enumerate(files):
        with _open(file) as img:
            try:
                img = img.convert(mode)
                if img.size != size:
                    img = img.resize(size, Image.Resampling.BILINEAR)
                pixels[i] = np.asarray(img, dtype=np.uint8).reshape(pixels.shape[1:])
            except OSError as exc:  # a truncated or corrupt file fails only when decoded
                raise _unreadable(file, exc) from None
    return (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0).contiguous()


def list_images(root: Path) -> tuple[list[tuple[Path, int]], tuple[str, ...]]:
    """(image file, class index) in sorted order, and the sorted class folder names."""
    classes = tuple(sorted(e.name for e in os.scandir(root) if e.is_dir() and e.name[0] != "."))
    if not classes:
        raise DataError(
            f"imagefolder:{root} has no class folders; put each class's images in "
            f"{root}/<class name>/ (torchvision ImageFolder layout)"
        )
    files = []
    for k, name in enumerate(classes):
        found = [
            Path(d, f)
            for d, names in sorted(_walk(root, root / name))
            for f in sorted(names)
            if f[0] != "." and f.lower().endswith(IMAGE_EXTENSIONS)
        ]
        if not found:
            raise DataError(
                f"imagefolder:{root} class folder {name!r} holds no images "
                f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder"
            )
        files += [(f, k) for f in found]
    return files, classes


def _walk(
    root: Path, folder: Path, above: frozenset[tuple[int, int]] = frozenset()
) -> list[tuple[str, list[str]]]:
    """``(folder, file names)`` of ``folder`` and every folder below it, links followed, hidden
    ones skipped; a link back to a folder above it (a loop: ``os.walk`` would follow it round
    and round) is one line naming it."""
    try:
        key = (os.stat(folder).st_dev, os.stat(folder).st_ino)
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise DataError(
            f"imagefolder:{root}: cannot read folder {folder} ({exc.strerror}); fix its "
            "permissions or remove it"
        ) from None
    if key in above:
        raise DataError(
            f"imagefolder:{root}: {folder.relative_to(root)} is a link back to a folder above it "
            "(a loop); remove the link"
        )
    out = [(str(folder), [e.name for e in entries if not _is_dir(e)])]
    for entry in entries:
        if entry.name[0] != "." and _is_dir(entry):
            out += _walk(root, Path(entry.path), above | {key})
    return out


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows links; a dangling one is no folder
    except OSError:
        return False


def common_format(
    root: Path, files: list[tuple[Path, int]], image_size: int | None
) -> tuple[str, tuple[int, int]]:
    """The mode ("L" or "RGB") and (width, height) every image is read as.

    Without ``image_size`` all images must share their mode and size; with it they are resized
    to ``image_size`` squared, and converted to RGB if any is in colour.
    """
    seen: dict[tuple[str, tuple[int, int]], Path] = {}
    for file, _ in files:
        with _open(file) as img:
            if img.mode not in _GREY | _COLOUR:
                raise DataError(
                    f"imagefolder:{root}: {file.relative_to(root)} has mode {img.mode} (16-bit or "
                    "float pixels); save the images as 8-bit greyscale (L) or RGB"
                )
            seen.setdefault((img.mode, img.size), file)
    modes = {m for m, _ in seen}
    if image_size is not None:
        return ("L" if modes <= _GREY else "RGB"), (image_size, image_size)
    if len(seen) > 1:
        (m1, s1), (m2, s2) = list(seen)[:2]
        a, b = (seen[k].relative_to(root) for k in list(seen)[:2])
        what, va, vb = ("modes", m1, m2) if m1 != m2 else ("sizes", _wh(s1), _wh(s2))
        raise DataError(
            f"imagefolder:{root} has images of mixed {what} ({a} is {va}, {b} is {vb}); pass "
            "--image-size N to convert them all to one mode and NxN pixels"
        )
    ((mode, size),) = seen
    return ("L" if mode in _GREY else "RGB"), size


def _wh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _open(file: Path) -> PILImage:
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(file)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise _unreadable(file, exc) from None


def _unreadable(file: Path, exc: Exception) -> DataError:
    return DataError(f"cannot read image {file} ({type(exc).__name__}); replace or remove the file")
