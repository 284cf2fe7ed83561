"""nopeek: measure and reduce how much raw data leaks through split learning.

The public API::

    from nopeek import TrainConfig, train, distance_correlation, NoPeekLoss
    result = train(TrainConfig(dataset="digits", alpha=0.5, epochs=10))
    result.metrics["test_accuracy"], result.metrics["dcor_test"]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nopeek.plugins import lazy_exports

if TYPE_CHECKING:  # the names below, for type checkers and IDEs; imported lazily at run time
    from nopeek.config import TrainConfig
    from nopeek.data import DATASETS, Dataset, Split, load_dataset
    from nopeek.distance import distance_correlation, u_distance_correlation_sqr
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
    from nopeek.runtime.channel import Channel, InProcessChannel, WireLog, WireRecord
    from nopeek.topology import TOPOLOGIES, Node, Objective, Topology
    from nopeek.training.trainer import TrainResult, train

__version__ = "0.1.0"

# public name -> the module that defines it. Imported on first use (PEP 562), so that
# ``import nopeek`` (and so ``nopeek --help``) does not pay for torch until it is needed.
_LAZY = {
    "Channel": "nopeek.runtime.channel",
    "ChannelError": "nopeek.errors",
    "CheckpointError": "nopeek.errors",
    "ConfigError": "nopeek.errors",
    "CutError": "nopeek.errors",
    "CutHook": "nopeek.hooks",
    "CutShapeError": "nopeek.errors",
    "DATASETS": "nopeek.data",
    "DataError": "nopeek.errors",
    "Dataset": "nopeek.data",
    "InProcessChannel": "nopeek.runtime.channel",
    "MODELS": "nopeek.models",
    "NoPeekLoss": "nopeek.regularizers",
    "Node": "nopeek.topology",
    "NopeekError": "nopeek.errors",
    "Objective": "nopeek.topology",
    "Observations": "nopeek.observe",
    "Observed": "nopeek.observe",
    "PartyState": "nopeek.hooks",
    "PeerError": "nopeek.errors",
    "Split": "nopeek.data",
    "TOPOLOGIES": "nopeek.topology",
    "ThreatModelError": "nopeek.errors",
    "Topology": "nopeek.topology",
    "TrainConfig": "nopeek.config",
    "TrainContext": "nopeek.hooks",
    "TrainResult": "nopeek.training.trainer",
    "WireLog": "nopeek.runtime.channel",
    "WireRecord": "nopeek.runtime.channel",
    "build_model": "nopeek.models",
    "cut_names": "nopeek.models",
    "distance_correlation": "nopeek.distance",
    "load_dataset": "nopeek.data",
    "nopeek_penalty": "nopeek.regularizers",
    "split": "nopeek.models",
    "train": "nopeek.training.trainer",
    "u_distance_correlation_sqr": "nopeek.distance",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


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
