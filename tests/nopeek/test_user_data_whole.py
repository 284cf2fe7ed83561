"""Data files read whole (``load_whole``: data to attack, not to train on): no split, no
minimum class size, labels optional, features as the file holds them."""

import numpy as np
import pytest
import torch

from nopeek.data.user import load_whole
from nopeek.errors import ConfigError, DataError
from tests.nopeek._user_data_files import _csv, _csv_rows, _npz


def test_an_npz_without_labels_is_every_row_unscaled(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5)).astype(np.float32) * 10
    np.savez(tmp_path / "v.npz", x=x, ids=np.array([7, 3, 5]))
    ds = load_whole(f"npz:{tmp_path / 'v.npz'}")
    assert torch.equal(ds.test.x, torch.from_numpy(x))  # not standardized
    assert ds.test.ids.tolist() == [7, 3, 5] and ds.test.y.tolist() == [-1, -1, -1]
    assert len(ds.train) == len(ds.aux) == 0 and ds.class_names == () and ds.n_classes == 0
    assert ds.data_range == pytest.approx(float(x.max() - x.min()))


def test_an_npz_with_a_tiny_class_keeps_its_labels(tmp_path):
    path = _npz(tmp_path / "v.npz", n=7, y=np.array([0, 0, 0, 0, 0, 1, 1]))
    ds = load_whole(f"npz:{path}")
    assert ds.class_names == ("0", "1") and ds.test.y.tolist() == [0] * 5 + [1] * 2


def test_a_csv_without_target_is_all_features(tmp_path):
    rows = [[20 + i, 0.5 * i, i % 2] for i in range(4)]
    path = _csv(tmp_path / "v.csv", rows, header=("age", "dose", "flag"))
    ds = load_whole(f"csv:{path}")
    assert ds.input_shape == (3,) and torch.equal(ds.test.x, torch.tensor(rows).float())
    with_target = load_whole(f"csv:{_csv(tmp_path / 't.csv', _csv_rows(4))}", target="outcome")
    assert with_target.input_shape == (2,) and len(with_target.class_names) == 3


@pytest.mark.parametrize(
    ("spec", "kw", "error", "match"),
    [
        ("digits", {}, ConfigError, "is not a data file"),
        ("npz:nowhere.npz", {}, DataError, "no such file"),
        ("npz:{tmp}/v.npz", {"target": "y"}, ConfigError, "drop --target"),
    ],
)
def test_bad_specs(tmp_path, spec, kw, error, match):
    _npz(tmp_path / "v.npz")
    with pytest.raises(error, match=match):
        load_whole(spec.format(tmp=tmp_path), **kw)
