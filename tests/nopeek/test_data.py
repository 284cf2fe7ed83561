"""Tests for nopeek.data: bundled data sets, label options, errors, and tiny on-disk vision sets."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
from sklearn.datasets import load_breast_cancer

import nopeek.data.bundled as bundled
from nopeek.data import (
    DATASETS,
    Split,
    check_finite,
    dataset_summary,
    load_dataset,
    stratified_take,
)
from nopeek.errors import ConfigError, DataError

# ---------------------------------------------------------------- writers for real file formats


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the (uncompressed) idx format MNIST ships in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _balanced_labels(n: int, n_classes: int = 10) -> np.ndarray:
    return np.arange(n) % n_classes


def _write_mnist(root: Path, folder: str, n_train: int = 40, n_test: int = 20, seed: int = 0):
    """A tiny MNIST-layout data root; returns (train images, train labels) as numpy arrays."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    images = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    labels = _balanced_labels(n_train).astype(np.uint8)
    _write_idx(raw / "train-images-idx3-ubyte", images)
    _write_idx(raw / "train-labels-idx1-ubyte", labels)
    _write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28), np.uint8))
    _write_idx(raw / "t10k-labels-idx1-ubyte", _balanced_labels(n_test).astype(np.uint8))
    return images, labels


CIFAR_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def _write_cifar(root: Path, per_batch: int = 10, seed: int = 0) -> np.ndarray:
    """Tiny CIFAR-10 pickle batches (the python version's format); returns batch 1's rows."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    first = None
    for name in names:
        rows = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        first = rows if first is None else first
        batch = {"batch_label": name, "labels": _balanced_labels(per_batch).tolist(), "data": rows}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": CIFAR_NAMES, "num_cases_per_batch": per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return first


@pytest.fixture
def no_cifar_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let torchvision accept tiny CIFAR files: its md5 check becomes an existence check."""
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def _all_ids(ds) -> torch.Tensor:
    return torch.cat([ds.train.ids, ds.test.ids, ds.aux.ids])


# ---------------------------------------------------------------- bundled data sets


def test_registry_names() -> None:
    assert DATASETS.names() == [
        "breast-cancer",
        "cifar10",
        "digits",
        "digits-x10",
        "fashion-mnist",
        "mnist",
    ]


def test_digits_shapes_ranges_ids() -> None:
    ds = load_dataset("digits")
    assert (ds.kind, ds.input_shape, ds.n_classes, ds.data_range) == ("image", (1, 8, 8), 10, 1.0)
    assert (len(ds.train), len(ds.test), len(ds.aux)) == (1077, 360, 360)
    for s in (ds.train, ds.test, ds.aux):
        assert (
            s.x.dtype == torch.float32 and s.y.dtype == torch.int64 and s.ids.dtype == torch.int64
        )
        assert s.x.shape[1:] == (1, 8, 8) and s.x.min() >= 0.0 and s.x.max() <= 1.0
    ids = _all_ids(ds)
    assert len(ids.unique()) == 1797
    assert float(ds.train.x.max()) == 1.0


def test_breast_cancer_shapes_and_ids() -> None:
    ds = load_dataset("breast-cancer")
    assert (ds.kind, ds.input_shape, ds.n_classes) == ("tabular", (30,), 2)
    assert ds.class_names == ("malignant", "benign")
    assert len(_all_ids(ds).unique()) == 569 == len(ds.train) + len(ds.test) + len(ds.aux)
    assert ds.data_range == pytest.approx(float(ds.train.x.max() - ds.train.x.min()))


@pytest.mark.parametrize("name", ["digits", "breast-cancer"])
def test_stratified(name: str) -> None:
    ds = load_dataset(name, seed=5)
    y_all = torch.cat([ds.train.y, ds.test.y, ds.aux.y])
    whole = torch.bincount(y_all).double() / len(y_all)
    for s in (ds.train, ds.test, ds.aux):
        frac = torch.bincount(s.y, minlength=ds.n_classes).double() / len(s)
        assert torch.allclose(frac, whole, atol=0.02)


@pytest.mark.parametrize("name", ["digits", "breast-cancer"])
def test_determinism_per_seed(name: str) -> None:
    a, b, c = load_dataset(name, seed=1), load_dataset(name, seed=1), load_dataset(name, seed=2)
    for part in ("train", "test", "aux"):
        sa, sb = getattr(a, part), getattr(b, part)
        assert torch.equal(sa.ids, sb.ids) and torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y)
    assert not torch.equal(a.train.ids, c.train.ids)
    assert not torch.equal(a.test.ids.sort().values, c.test.ids.sort().values)


def test_standardization_fitted_on_train_only() -> None:
    ds = load_dataset("breast-cancer", seed=0)
    assert torch.allclose(ds.train.x.mean(0), torch.zeros(30), atol=1e-4)
    assert torch.allclose(ds.train.x.std(0, correction=0), torch.ones(30), atol=1e-4)
    raw = torch.as_tensor(load_breast_cancer().data, dtype=torch.float32)
    train_raw = raw[ds.train.ids]
    mean, std = train_raw.mean(0), train_raw.std(0, correction=0)
    for s in (ds.test, ds.aux):
        assert torch.allclose(s.x, (raw[s.ids] - mean) / std, atol=1e-4)
    assert not torch.allclose(ds.test.x.mean(0), torch.zeros(30), atol=1e-3)


def test_split_subset_and_len() -> None:
    ds = load_dataset("digits")
    sub = ds.train.subset(torch.tensor([3, 0, 7]))
    assert len(sub) == 3 and torch.equal(sub.ids, ds.train.ids[[3, 0, 7]])
    assert torch.equal(sub.x[1], ds.train.x[0])
    with pytest.raises(DataError, match="same number of rows"):
        Split(x=torch.zeros(3, 2), y=torch.zeros(2, dtype=torch.int64), ids=torch.arange(3))


# ---------------------------------------------------------------- label options and max_train


def test_one_vs_rest_digits() -> None:
    ds = load_dataset("digits", one_vs_rest=0)
    assert ds.n_classes == 2 and ds.class_names == ("not 0", "0")
    for s in (ds.train, ds.test, ds.aux):
        assert set(s.y.unique().tolist()) == {0, 1}
        assert float(s.y.float().mean()) == pytest.approx(0.1, abs=0.02)
    plain = load_dataset("digits")
    assert torch.equal(ds.train.y, (plain.train.y == 0).long())
    assert dataset_summary(ds)["positive_rate"]["train"] == pytest.approx(0.1, abs=0.02)


def test_shuffle_labels() -> None:
    plain = load_dataset("digits", seed=3, one_vs_rest=4)
    shuf = load_dataset("digits", seed=3, one_vs_rest=4, shuffle_labels=True)
    assert not torch.equal(plain.train.y, shuf.train.y)
    assert torch.equal(plain.train.y.sort().values, shuf.train.y.sort().values)
    assert torch.equal(plain.train.x, shuf.train.x)
    assert torch.equal(plain.test.y, shuf.test.y) and torch.equal(plain.aux.y, shuf.aux.y)
    again = load_dataset("digits", seed=3, one_vs_rest=4, shuffle_labels=True)
    assert torch.equal(again.train.y, shuf.train.y)


def test_max_train_stratified() -> None:
    ds = load_dataset("digits", max_train=100, seed=2)
    assert len(ds.train) == 100 and len(ds.test) == 360
    assert torch.bincount(ds.train.y).tolist() == [10] * 10
    full = load_dataset("digits", seed=2)
    assert set(ds.train.ids.tolist()) <= set(full.train.ids.tolist())
    assert len(load_dataset("digits", max_train=10**6).train) == 1077


def test_stratified_take_small_sets() -> None:
    y = torch.tensor([0, 0, 1, 1, 2, 2, 2, 2])
    taken, kept = stratified_take(y, 3, seed=0)
    assert len(taken) == 3 and len(kept) == 5
    assert sorted(torch.cat([taken, kept]).tolist()) == list(range(8))
    assert y[taken].tolist().count(2) >= 1


def test_dataset_summary() -> None:
    s = dataset_summary(load_dataset("digits"))
    assert s["n_train"] == 1077 and s["input_shape"] == [1, 8, 8] and "positive_rate" not in s
    assert sum(s["train_class_counts"]) == 1077


# ---------------------------------------------------------------- errors


def _one_line(err: pytest.ExceptionInfo) -> None:
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("k", [10, -1])
def test_one_vs_rest_out_of_range(k: int) -> None:
    with pytest.raises(ConfigError, match=r"one_vs_rest=.* choose 0\.\.9") as err:
        load_dataset("digits", one_vs_rest=k)
    _one_line(err)


def test_unknown_name() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'mnits'; choose one of: .*mnist"):
        load_dataset("mnits")


def test_bad_seed_and_max_train() -> None:
    with pytest.raises(ConfigError, match="seed must be a non-negative integer"):
        load_dataset("digits", seed=-1)
    with pytest.raises(ConfigError, match="max_train must be a positive integer"):
        load_dataset("digits", max_train=0)


def test_check_finite() -> None:
    check_finite(torch.ones(3), what="ok")
    x = torch.tensor([1.0, float("nan"), float("inf"), float("-inf")])
    with pytest.raises(DataError, match="my x contains 1 NaN and 2 inf values") as err:
        check_finite(x, what="my x")
    _one_line(err)


def test_nan_through_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    real = load_breast_cancer()

    def poisoned():
        real.data[[5, 9], 3] = np.nan
        return real

    monkeypatch.setattr(bundled, "load_breast_cancer", poisoned)
    with pytest.raises(DataError, match="breast-cancer x contains 2 NaN and 0 inf"):
        load_dataset("breast-cancer")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_no_data_root(name: str) -> None:
    with pytest.raises(DataError, match=f"{name} needs --data-root DIR .* pass --download") as err:
        load_dataset(name)
    _one_line(err)


def test_data_root_missing_file_empty(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist; .*--download"):
        load_dataset("mnist", data_root=tmp_path / "nope")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(DataError, match="is not a directory"):
        load_dataset("mnist", data_root=tmp_path / "f.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty; put the cifar10 files in"):
        load_dataset("cifar10", data_root=tmp_path / "empty")


def test_files_not_found(tmp_path: Path) -> None:
    _write_mnist(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="mnist files not found in .*: t10k-labels-idx1-ubyte"):
        load_dataset("mnist", data_root=tmp_path)
    with pytest.raises(DataError, match="fashion-mnist files not found in .*FashionMNIST"):
        load_dataset("fashion-mnist", data_root=tmp_path)


def test_corrupt_mnist_file(tmp_path: Path) -> None:
    _write_mnist(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"garbage!")
    with pytest.raises(DataError, match="could not read mnist files .*--download") as err:
        load_dataset("mnist", data_root=tmp_path)
    _one_line(err)


def test_cifar_md5_mismatch_is_reported(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    with pytest.raises(DataError, match="failed torchvision's md5 check"):
        load_dataset("cifar10", data_root=tmp_path)


# ---------------------------------------------------------------- tiny on-disk vision sets


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")]
)
def test_mnist_like_from_idx(tmp_path: Path, name: str, folder: str) -> None:
    images, labels = _write_mnist(tmp_path, folder)
    ds = load_dataset(name, data_root=str(tmp_path), seed=0)
    assert (ds.kind, ds.input_shape, ds.n_classes, ds.data_range) == ("image", (1, 28, 28), 10, 1.0)
    assert (len(ds.train), len(ds.aux), len(ds.test)) == (36, 4, 20)
    assert len(_all_ids(ds).unique()) == 60
    assert ds.test.ids.min() == 40
    i = int(ds.train.ids[0])
    assert torch.equal(ds.train.x[0, 0], torch.from_numpy(images[i]).float() / 255)
    assert int(ds.train.y[0]) == int(labels[i])
    assert ds.train.x.dtype == torch.float32 and ds.train.x.max() <= 1.0
    assert len(ds.aux.y.unique()) == 4  # stratified: one each from 4 classes
    again = load_dataset(name, data_root=tmp_path, seed=0)
    assert torch.equal(again.aux.ids, ds.aux.ids)
    if name == "fashion-mnist":
        assert ds.class_names[0] == "T-shirt/top"
    else:
        assert ds.class_names == tuple("0123456789")


def test_mnist_max_train_and_one_vs_rest(tmp_path: Path) -> None:
    _write_mnist(tmp_path, "MNIST")
    ds = load_dataset("mnist", data_root=tmp_path, max_train=20, one_vs_rest=3)
    assert len(ds.train) == 20 and ds.n_classes == 2 and ds.class_names == ("not 3", "3")
    assert int(ds.test.y.sum()) == 2


def test_cifar10_from_pickle_batches(tmp_path: Path, no_cifar_md5: None) -> None:
    first = _write_cifar(tmp_path)
    ds = load_dataset("cifar10", data_root=tmp_path, seed=1)
    assert (ds.input_shape, ds.n_classes, ds.class_names) == ((3, 32, 32), 10, tuple(CIFAR_NAMES))
    assert (len(ds.train), len(ds.aux), len(ds.test)) == (45, 5, 10)
    assert len(_all_ids(ds).unique()) == 60
    whole = torch.cat([ds.train.x, ds.aux.x])[torch.cat([ds.train.ids, ds.aux.ids]).argsort()]
    expected = torch.from_numpy(first[0].reshape(3, 32, 32)).float() / 255
    assert torch.equal(whole[0], expected)
    assert ds.train.x.is_contiguous()


# ---------------------------------------------------------------- default models, one place
def test_a_plugin_data_set_without_a_default_model_asks_for_model(monkeypatch):
    from nopeek.config import TrainConfig
    from nopeek.data import DataSource, default_model

    def load(**kw):  # an entry point names a bare loader, as a plug-in package would
        return load_dataset("breast-cancer", seed=kw["seed"])

    monkeypatch.setitem(DATASETS._entries, "my-data", load)
    monkeypatch.setitem(DATASETS._entries, "my-mlp-data", DataSource(load, default_model="mlp"))
    with pytest.raises(
        ConfigError, match=r"'my-data' was registered without a default model; pass --model"
    ):
        TrainConfig(dataset="my-data").resolved()
    assert TrainConfig(dataset="my-data", model="mlp").resolved().cut == "fc1"
    assert TrainConfig(dataset="my-mlp-data").resolved().model == "mlp"
    assert default_model("digits") == "digits-cnn" and default_model("cifar10") == "resnet18"
    with pytest.raises(ConfigError, match="unknown dataset 'nope'; choose one of: breast-cancer"):
        TrainConfig(dataset="nope").resolved()
