"""Bad user data (``npz:``, ``csv:``, ``imagefolder:``): every case is one line, exit 2, and
no run folder."""

import re
from pathlib import Path

import numpy as np
import pytest

from tests.nopeek._user_data_files import _csv, _csv_rows, _err, _pngs, _train

# ---------------------------------------------------------------- bad data: one line, exit 2


def _bad_npz(tmp_path: Path, **arrays) -> str:
    rng = np.random.default_rng(0)
    base = {"x": rng.normal(size=(20, 3)), "y": np.arange(20) % 2}
    np.savez(tmp_path / "bad.npz", **{k: v for k, v in (base | arrays).items() if v is not None})
    return f"npz:{tmp_path / 'bad.npz'}"


def _bad_csv(tmp_path: Path, rows: list[list], header=("age", "dose", "outcome")) -> str:
    return f"csv:{_csv(tmp_path / 'bad.csv', rows, header)}"


def _nan_x(tmp_path):
    x = np.ones((20, 3))
    x[4, 1], x[7, 0] = np.nan, np.inf
    return _bad_npz(tmp_path, x=x)


def _rows_with(i: int, j: int, value) -> list[list]:
    rows = _csv_rows()
    rows[i][j] = value
    return rows


def _mixed(tmp_path, **kw):
    root = _pngs(tmp_path / "imgs", {"a": 8, "b": 8})
    _pngs(root, {"b": 1}, **kw)
    return f"imagefolder:{root}"


def _empty_class(tmp_path):
    root = _pngs(tmp_path / "imgs", {"a": 8})
    (root / "b").mkdir()
    (root / "b" / "notes.txt").write_text("no images here")
    return f"imagefolder:{root}"


def _corrupt(tmp_path):
    root = _pngs(tmp_path / "imgs", {"a": 8, "b": 8})
    (root / "b" / "003.png").write_bytes(b"\x89PNG not really")
    return f"imagefolder:{root}"


def _link_loop(tmp_path):
    root = _pngs(tmp_path / "imgs", {"a": 8, "b": 8})
    (root / "b" / "more").mkdir()
    (root / "b" / "more" / "up").symlink_to(root / "b", target_is_directory=True)
    return f"imagefolder:{root}"


BAD = {
    "missing value": (
        lambda t: _bad_csv(t, _rows_with(3, 1, "")),
        ["--target", "outcome"],
        r"missing value at row 3 \(line 5\), column 'dose'",
    ),
    "NA value": (
        lambda t: _bad_csv(t, _rows_with(6, 2, "NA")),
        ["--target", "outcome"],
        r"missing value at row 6 \(line 8\), column 'outcome'",
    ),
    "non-numeric column": (
        lambda t: _bad_csv(t, _rows_with(2, 0, "forty")),
        ["--target", "outcome"],
        r"column 'age' is not numeric \(row 2, line 4: 'forty'\); drop the column or encode",
    ),
    "unknown target": (
        lambda t: _bad_csv(t, _csv_rows()),
        ["--target", "label"],
        r"no column --target 'label' .*the columns are: age, dose, outcome",
    ),
    "no target": (
        lambda t: _bad_csv(t, _csv_rows()),
        [],
        r"needs --target COLUMN .*the columns are: age, dose, outcome",
    ),
    "ragged row": (
        lambda t: _bad_csv(t, _csv_rows()[:5] + [[1, 2]] + _csv_rows()),
        ["--target", "outcome"],
        r"line 7 has 2 fields but the header has 3",
    ),
    "small class": (
        lambda t: _bad_csv(t, _csv_rows() + [[1, 1, "rare"]] * 3),
        ["--target", "outcome"],
        r"class 'rare' has 3 sample\(s\), too few to split; every class needs at least 5",
    ),
    "too few samples": (
        lambda t: _bad_npz(t, x=np.zeros((12, 2)), y=np.arange(12) % 2),
        [],
        r"has 12 samples, so 3 test samples, too few .* at least 16 samples",
    ),
    "mixed modes": (
        lambda t: _mixed(t, mode="RGB"),
        [],
        r"mixed modes \(a/000.png is L, b/000.png is RGB\); pass --image-size N",
    ),
    "mixed sizes": (
        lambda t: _mixed(t, size=(9, 8)),
        [],
        r"mixed sizes \(a/000.png is 8x8, b/000.png is 9x8\); pass --image-size N",
    ),
    "empty folder": (
        lambda t: f"imagefolder:{(t / 'imgs').mkdir() or t / 'imgs'}",
        [],
        r"has no class folders; put each class's images in .*/<class name>/",
    ),
    "empty class folder": (
        _empty_class,
        [],
        r"class folder 'b' holds no images \(.jpg, .jpeg, .png",
    ),
    "corrupt image": (_corrupt, [], r"cannot read image .*003.png \(UnidentifiedImageError\)"),
    "link loop": (_link_loop, [], r"imgs: b/more/up is a link back to a folder above it \(a loop"),
    "empty npz": (
        lambda t: _bad_npz(t, x=np.zeros((0, 3)), y=np.zeros(0, dtype=int)),
        [],
        r"bad.npz holds no samples \(x has shape \(0, 3\)\); save it with np.savez",
    ),
    "missing file": (lambda t: f"npz:{t / 'nope.npz'}", [], r"no such file; check the path"),
    "missing folder": (lambda t: f"imagefolder:{t / 'nope'}", [], r"no such folder"),
    "not an npz": (
        lambda t: f"csv:{_csv(t / 'x.npz', _csv_rows())}".replace("csv:", "npz:"),
        [],
        r"is not an npz archive \(a zip of .npy arrays\); save it with np.savez",
    ),
    "pickled npz": (
        lambda t: _bad_npz(t, y=np.array([{"a": 1}] * 20, dtype=object)),
        [],
        r"holds Python objects \(never unpickled\) \(ValueError\); save it with np.savez",
    ),
    "npz without y": (
        lambda t: _bad_npz(t, y=None, labels=np.arange(20)),
        [],
        r"has arrays \['labels', 'x'\] but no 'y'; save it with np.savez\(PATH, x=",
    ),
    "npz without x": (lambda t: _bad_npz(t, x=None), [], r"has arrays \['y'\] but no 'x'"),
    "length mismatch": (
        lambda t: _bad_npz(t, y=np.arange(19) % 2),
        [],
        r"x has shape \(20, 3\) but y \(19,\); give one label per row of x",
    ),
    "duplicate ids": (
        lambda t: _bad_npz(t, ids=np.array([5] * 3 + list(range(10, 27)))),
        [],
        r"sample id 5 appears 3 times in ids; give every sample a unique id",
    ),
    "negative ids": (
        lambda t: _bad_npz(t, ids=np.arange(-1, 19)),
        [],
        r"ids has shape \(20,\) and dtype int64; give \(20,\) unique non-negative integers",
    ),
    "nan or inf in x": (_nan_x, [], r"x contains 1 NaN and 1 inf values; remove or impute them"),
    "inf in a csv": (
        lambda t: _bad_csv(t, _rows_with(1, 1, "inf")),
        ["--target", "outcome"],
        r"x contains 0 NaN and 1 inf values",
    ),
    "float labels": (
        lambda t: _bad_npz(t, y=np.linspace(0, 1, 20)),
        [],
        r"y holds non-integer or non-finite numbers; .* nopeek does not do regression",
    ),
    "channels last": (
        lambda t: _bad_npz(t, x=np.zeros((20, 8, 8, 3), dtype=np.uint8)),
        [],
        r"looks channels-last; save images as \(N, C, H, W\)",
    ),
    "images out of range": (
        lambda t: _bad_npz(t, x=np.full((20, 1, 4, 4), 2.0)),
        [],
        r"images span \[2, 2\]; save them as uint8 0..255 or floats in \[0, 1\]",
    ),
    "target for an npz": (
        lambda t: _bad_npz(t),
        ["--target", "y"],
        r"--target names the label column of a csv:PATH data set; npz:PATH holds its labels",
    ),
    "image size for a csv": (
        lambda t: _bad_csv(t, _csv_rows()),
        ["--target", "outcome", "--image-size", "8"],
        r"--image-size resizes imagefolder:PATH images; drop it for csv:PATH",
    ),
    "bad image size": (
        lambda t: _mixed(t),
        ["--image-size", "1"],
        r"--image-size must be an integer >= 2, got 1",
    ),
    "target for digits": (lambda t: "digits", ["--target", "y"], r"not to digits; drop them"),
    "unknown format": (
        lambda t: "parquet:x.parquet",
        [],
        r"unknown dataset 'parquet:x.parquet'; .* or a file: csv:PATH, imagefolder:PATH, npz:PATH",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_data_is_one_line_exit_2_and_nothing_written(case, tmp_path, capsys):
    make, extra, message = BAD[case]
    spec = make(tmp_path)
    out = tmp_path / "run"
    assert _train(spec, out, *extra) == 2
    err = _err(capsys)
    assert re.search(message, err), err
    assert not out.exists()
