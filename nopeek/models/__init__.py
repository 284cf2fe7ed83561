"""Reference models with named cut points.

Every reference model is an ``nn.Sequential`` of *named blocks*; a cut can be placed after any
block except the last, and the cut's name is the block's name. ``split`` turns a model and a list
of cuts into consecutive segments. ``nopeek models`` lists what is here.
"""

from nopeek.models import _reference  # noqa: F401  (registers the reference models)
from nopeek.models._registry import MODELS, ModelSpec, build_model, cut_names, split

__all__ = ["MODELS", "ModelSpec", "build_model", "cut_names", "split"]
