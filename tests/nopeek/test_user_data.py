"""The user's own data (``npz:``, ``csv:``, ``imagefolder:``): files written in their real on-disk
formats train end to end from the CLI, split like the bundled sets, and every bad file is one
line, exit 2, and no run folder."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.transforms.functional import pil_to_tensor

from nopeek.cli.main import build_parser
from nopeek.cli.sweep import base_config
from nopeek.config import TrainConfig
from nopeek.data import DATASETS, FORMATS, SHAPE_MODELS, load_dataset
from nopeek.data.user import MIN_PER_CLASS, describe
from nopeek.errors import ConfigError, DataError
from nopeek.models import MODELS, build_model, cut_names, split
from tests.nopeek._user_data_files import _csv, _csv_rows, _npz, _pngs, _train

# ---------------------------------------------------------------- registry, models


def test_formats_are_registered_beside_the_bundled_sets():
    assert FORMATS.names() == ["csv", "imagefolder", "npz"]
    assert "npz:x.npz" not in DATASETS and len(DATASETS.names()) >= 5


def test_image_defaults_are_models_of_that_fixed_shape():
    for shape, name in SHAPE_MODELS.items():
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
