"""The user's own data (``npz:``, ``csv:``, ``imagefolder:``): files written in their real on-disk
formats train end to end from the CLI, split like the bundled sets, and every bad file is one
line, exit 2, and no run folder."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.transforms.functional import pil_to_tensor

from nopeek.cli.main import build_parser, main
from nopeek.cli.sweep import base_config
from nopeek.config import TrainConfig
from nopeek.data import DATASETS, FORMATS, load_dataset
from nopeek.errors import ConfigError, DataError
from nopeek.models import MODELS, build_model, cut_names, split
from nopeek.user_data import _SHAPE_MODELS, MIN_PER_CLASS, describe

FAST = ["--epochs", "1", "--dcor-samples", "20", "--record-samples", "8", "--quiet"]


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    return err


def _train(spec: str, out: Path, *extra: str) -> int:
    return main(["train", "--dataset", spec, *extra, *FAST, "--out", str(out)])


def _npz(path: Path, n: int = 40, **arrays) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = np.arange(n) % 2
    np.savez(path, **({"x": x, "y": y} | arrays))
    return path


def _csv(path: Path, rows: list[list], header=("age", "dose", "outcome")) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _csv_rows(n: int = 30) -> list[list]:
    labels = ["sick", "healthy", "unknown"]
    return [[20 + i, round(0.5 * i**1.5, 3), labels[i % 3]] for i in range(n)]


def _pngs(root: Path, per_class: dict[str, int], mode="L", size=(8, 8), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    channels = {"L": (), "RGB": (3,)}[mode]
    for name, count in per_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, size=(size[1], size[0], *channels), dtype=np.uint8)
            Image.fromarray(pixels, mode=mode).save(root / name / f"{i:03d}.png")
    return root


# ---------------------------------------------------------------- registry, models


def test_formats_are_registered_beside_the_bundled_sets():
    assert FORMATS.names() == ["csv", "imagefolder", "npz"]
    assert "npz:x.npz" not in DATASETS and len(DATASETS.names()) >= 5


def test_image_defaults_are_models_of_that_fixed_shape():
    for shape, name in _SHAPE_MODELS.items():
        assert shape in MODELS.get(name).input_shapes
    assert MODELS.get("cnn").input_shapes == () and MODELS.get("cnn").input_kind == "image"


@pytest.mark.parametrize("shape", [(1, 2, 2), (3, 7, 5), (2, 40, 33)])
def test_cnn_takes_any_image_size_and_cuts_compose(shape):
    model = build_model("cnn", input_shape=shape, n_classes=3)
    assert cut_names(model) == ["conv1", "conv2", "fc1"]
    x = torch.rand(4, *shape)
    client, server = split(model, "conv2")
    assert client(x).shape == (4, 32, shape[1] // 2, shape[2] // 2)
    assert torch.equal(server(client(x)), model(x)) and model(x).shape == (4, 3)


def test_cnn_refuses_flat_or_one_pixel_inputs():
    with pytest.raises(ConfigError, match=r"model 'cnn' takes \(C, H, W\) images of at least 2x2"):
        build_model("cnn", input_shape=(1, 1, 9), n_classes=2)


# ---------------------------------------------------------------- end to end from the CLI


def test_npz_tabular_trains_with_its_ids_and_labels(tmp_path, capsys):
    ids = np.arange(1000, 1040) * 3
    y = np.array([7, 3] * 20)  # integer labels: classes in sorted order, names the values
    path = _npz(tmp_path / "t.npz", y=y, ids=ids)
    assert _train(f"npz:{path}", tmp_path / "run") == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["model"], config["cut"], config["class_names"]) == ("mlp", "fc1", ["3", "7"])
    ds = TrainConfig.from_dict(config).load_data()
    assert ds.kind == "tabular" and ds.input_shape == (6,)
    for part in (ds.train, ds.test, ds.aux):  # each sample keeps its own id and label
        rows = (part.ids // 3 - 1000).numpy()
        assert np.array_equal(part.y.numpy(), (y[rows] == 7).astype(np.int64))


def test_npz_images_default_to_the_model_of_their_shape(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.repeat(["b", "a"], 10)
    x8 = rng.integers(0, 256, size=(20, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x8, y=labels)
    np.savez(tmp_path / "odd.npz", x=rng.random((20, 3, 6, 10)).astype(np.float32), y=labels)
    digits = TrainConfig(dataset=f"npz:{tmp_path / 'd.npz'}").resolved()
    assert (digits.model, digits.class_names) == ("digits-cnn", ["a", "b"])
    ds = digits.load_data()
    assert ds.input_shape == (1, 8, 8) and ds.data_range == 1.0
    whole = torch.cat([ds.train.x, ds.test.x, ds.aux.x])[torch.argsort(_ids(ds))]
    assert torch.equal(whole, torch.from_numpy(x8).float().unsqueeze(1) / 255)
    assert TrainConfig(dataset=f"npz:{tmp_path / 'odd.npz'}").resolved().model == "cnn"


def test_csv_trains_with_sorted_string_classes_standardized_on_train(tmp_path):
    rows = _csv_rows()
    path = _csv(tmp_path / "p.csv", rows)
    assert _train(f"csv:{path}", tmp_path / "run", "--target", "outcome") == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["class_names"] == ["healthy", "sick", "unknown"]
    assert (config["target"], config["model"]) == ("outcome", "mlp")
    ds = TrainConfig.from_dict(config).load_data()
    raw = np.array([r[:2] for r in rows], dtype=np.float64)
    train_rows = raw[ds.train.ids.numpy()]
    mean, std = train_rows.mean(axis=0), train_rows.std(axis=0)
    for part in (ds.train, ds.test, ds.aux):  # ids are data rows; one train-fitted transform
        expected = (raw[part.ids.numpy()] - mean) / std
        np.testing.assert_allclose(part.x.numpy(), expected, rtol=1e-4, atol=1e-5)
        names = [rows[i][2] for i in part.ids.tolist()]
        assert [ds.class_names[k] for k in part.y.tolist()] == names


def test_imagefolder_matches_torchvision_and_resizes_mixed_images(tmp_path, capsys):
    root = _pngs(tmp_path / "imgs", {"cat": 8, "dog": 9})
    ds = TrainConfig(dataset=f"imagefolder:{root}").resolved().load_data()
    reference = ImageFolder(str(root), loader=Image.open)  # same order, same classes
    assert ds.class_names == tuple(reference.classes) and ds.input_shape == (1, 8, 8)
    for part in (ds.train, ds.test, ds.aux):
        for x, y, i in zip(part.x, part.y, part.ids.tolist(), strict=True):
            img, label = reference[i]
            assert int(y) == label and torch.equal(x, pil_to_tensor(img).float() / 255)
    _pngs(root, {"dog": 2}, mode="RGB", size=(12, 10), seed=1)  # overwrites two dog images
    assert _train(f"imagefolder:{root}", tmp_path / "run", "--image-size", "10") == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["model"], config["image_size"]) == ("cnn", 10)
    resized = TrainConfig.from_dict(config).load_data()
    assert resized.input_shape == (3, 10, 10) and float(resized.train.x.max()) <= 1.0


# ---------------------------------------------------------------- splits


def _ids(ds) -> torch.Tensor:
    return torch.cat([ds.train.ids, ds.test.ids, ds.aux.ids])


@pytest.mark.parametrize("counts", [[MIN_PER_CLASS] * 4, [MIN_PER_CLASS, 40], [9, 13, 6, 30]])
def test_splits_are_stratified_seeded_and_disjoint(tmp_path, counts):
    y = np.repeat(np.arange(len(counts)), counts)
    path = _npz(tmp_path / "s.npz", n=len(y), y=np.random.default_rng(2).permutation(y))
    a, b, c = (load_dataset(f"npz:{path}", seed=s) for s in (4, 4, 5))
    assert torch.equal(_ids(a), _ids(b)) and not torch.equal(_ids(a), _ids(c))
    assert sorted(_ids(a).tolist()) == list(range(len(y)))  # disjoint and complete
    for part, share in (("train", 0.6), ("test", 0.2), ("aux", 0.2)):
        got = torch.bincount(getattr(a, part).y, minlength=len(counts)).numpy()
        assert (got >= 1).all()  # every class in each split
        assert np.all(np.abs(got - share * np.array(counts)) <= 1.5)


def test_sweep_flags_reach_the_config(tmp_path):
    path = _csv(tmp_path / "p.csv", _csv_rows())
    args = build_parser().parse_args(["sweep", "--dataset", f"csv:{path}", "--target", "outcome"])
    config = base_config(args)
    assert (config.target, config.model, config.class_names[0]) == ("outcome", "mlp", "healthy")
    args = build_parser().parse_args(["train", "--image-size", "12"])
    assert args.image_size == 12


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


def test_a_run_is_never_rebuilt_on_relabelled_data(tmp_path):
    path = _csv(tmp_path / "p.csv", _csv_rows())
    config = TrainConfig(dataset=f"csv:{path}", target="outcome").resolved()
    _csv(path, [r[:2] + [r[2].replace("sick", "ill")] for r in _csv_rows()])
    with pytest.raises(DataError, match=r"now has classes \['healthy', 'ill', 'unknown'\] \(3\)"):
        config.load_data()


def test_describe_is_none_for_registered_sets():
    assert describe("digits") is None and describe("no-such-set") is None
    with pytest.raises(ConfigError, match="not to breast-cancer; drop them"):
        describe("breast-cancer", image_size=8)
