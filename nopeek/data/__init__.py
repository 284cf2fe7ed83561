"""Data sets for split-learning leakage experiments: train/test splits plus an attacker's aux split.

Every data set comes as three disjoint :class:`Split` objects on CPU. ``aux`` is the attacker's
own data (same distribution, never seen in training). Sample ids are unique across the three
splits of a data set, so membership and reconstruction results can be traced back to samples.

The package, bottom up:

- :mod:`~nopeek.data.splits`: the :class:`Split` and :class:`Dataset` records and the stratified
  seeded split every source shares;
- :mod:`~nopeek.data.sources`: the registries :data:`DATASETS` (names) and :data:`FORMATS`
  (``FORMAT:PATH`` files), each entry a :class:`DataSource` with its default model;
- :mod:`~nopeek.data.vision`, :mod:`~nopeek.data.bundled`: digits, breast-cancer and the
  torchvision sets (MNIST, Fashion-MNIST, CIFAR-10), registered with their default models;
- :mod:`~nopeek.data.files`, :mod:`~nopeek.data.images`, :mod:`~nopeek.data.user`: the user's
  own files (``npz:PATH``, ``csv:PATH``, ``imagefolder:PATH``);
- :mod:`~nopeek.data.keyed`, :mod:`~nopeek.data.party`: csv files keyed by a sample-id column and
  what one party of a distributed run holds of the data;
- :mod:`~nopeek.data.load`: :func:`load_dataset` by name, with the label options.
"""

from nopeek.data import bundled as bundled  # registers digits, breast-cancer, torchvision sets
from nopeek.data import user as user  # registers the FORMATS npz, csv, imagefolder
from nopeek.data.load import dataset_summary, load_dataset
from nopeek.data.sources import (
    DATASETS,
    FORMATS,
    SHAPE_MODELS,
    DataSource,
    Loader,
    default_model,
    file_model,
    find_loader,
)
from nopeek.data.splits import (
    AUX_FRACTION,
    TEST_FRACTION,
    Dataset,
    Split,
    check_finite,
    stratified_take,
)
from nopeek.data.vision import VISION_SPECS

__all__ = [
    "AUX_FRACTION",
    "DATASETS",
    "FORMATS",
    "SHAPE_MODELS",
    "TEST_FRACTION",
    "VISION_SPECS",
    "DataSource",
    "Dataset",
    "Loader",
    "Split",
    "check_finite",
    "dataset_summary",
    "default_model",
    "file_model",
    "find_loader",
    "load_dataset",
    "stratified_take",
]
