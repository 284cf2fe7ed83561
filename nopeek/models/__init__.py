"""Reference models with named cut points.

Every reference model is an ``nn.Sequential`` of *named blocks*; a cut can be placed after any
block except the last, and the cut's name is the block's name. ``split`` turns a model and a list
of cuts into consecutive segments. Any other model that ``torch.fx`` can trace
(``torchvision:<name>``, ``module:<package.module:factory>``, or a module passed to ``split``)
is cut at module paths (:mod:`nopeek.models.fx_split`). ``nopeek models`` lists what is here.
"""

from nopeek.models import _external, _reference  # noqa: F401  (register models and resolvers)
from nopeek.models._registry import MODELS, ModelSpec, build_model, cut_names, missing_cut, split
from nopeek.models.fx_split import CutInfo, cut_info

__all__ = [
    "MODELS",
    "CutInfo",
    "ModelSpec",
    "build_model",
    "cut_info",
    "cut_names",
    "missing_cut",
    "split",
]
