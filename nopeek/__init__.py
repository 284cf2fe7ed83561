"""nopeek: measure and reduce how much raw data leaks through split learning.

The public API::

    from nopeek import TrainConfig, train, distance_correlation, NoPeekLoss
    result = train(TrainConfig(dataset="digits", alpha=0.5, epochs=10))
    result.metrics["test_accuracy"], result.metrics["dcor_test"]
"""

from nopeek.channel import Channel, InProcessChannel, WireLog, WireRecord
from nopeek.config import TrainConfig
from nopeek.data import DATASETS, Dataset, Split, load_dataset
from nopeek.distance import distance_correlation, u_distance_correlation_sqr
from nopeek.engine import SplitEngine
from nopeek.errors import (
    ChannelError,
    CheckpointError,
    ConfigError,
    CutError,
    CutShapeError,
    DataError,
    NopeekError,
    PeerError,
    ThreatModelError,
)
from nopeek.hooks import CutHook, PartyState, TrainContext
from nopeek.models import MODELS, build_model, cut_names, split
from nopeek.observe import Observations, Observed
from nopeek.regularizers import NoPeekLoss, nopeek_penalty
from nopeek.topology import TOPOLOGIES, Node, Objective, Topology
from nopeek.trainer import TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "DATASETS",
    "MODELS",
    "TOPOLOGIES",
    "Channel",
    "ChannelError",
    "CheckpointError",
    "ConfigError",
    "CutError",
    "CutHook",
    "CutShapeError",
    "DataError",
    "Dataset",
    "InProcessChannel",
    "Node",
    "NoPeekLoss",
    "NopeekError",
    "Objective",
    "Observations",
    "Observed",
    "PartyState",
    "PeerError",
    "Split",
    "SplitEngine",
    "ThreatModelError",
    "Topology",
    "TrainConfig",
    "TrainContext",
    "TrainResult",
    "WireLog",
    "WireRecord",
    "__version__",
    "build_model",
    "cut_names",
    "distance_correlation",
    "load_dataset",
    "nopeek_penalty",
    "split",
    "train",
    "u_distance_correlation_sqr",
]
