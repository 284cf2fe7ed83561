"""Model registry, cut names and ``split``."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from nopeek.errors import ConfigError, CutError, NopeekError
from nopeek.plugins import ENTRY_GROUPS
from nopeek.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    """How to build one reference model.

    ``build(input_shape, n_classes)`` returns an ``nn.Sequential`` of named blocks (or, for
    ``torchvision:``/``module:`` models, any module cut with torch.fx); ``input_kind`` is
    "image", "tabular" or "any"; ``default_cut`` is what the CLI uses when no cut is given
    ("" for none: the user must pass one).
    """

    name: str
    description: str
    build: Callable[[tuple[int, ...], int], nn.Module]
    input_kind: str
    default_cut: str
    cuts: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...] = ()
    example_shape: tuple[int, ...] = ()  # any fitting input (to list cuts) when shapes vary


def _check_spec(name: str, entry: object) -> None:
    if not isinstance(entry, ModelSpec):
        raise TypeError(f"{entry!r} is not a nopeek.models.ModelSpec")


class ModelRegistry(Registry[ModelSpec]):
    """The model registry, plus resolvers for names with a prefix: ``torchvision:<name>`` and
    ``module:<package.module:factory>`` build a spec on demand (see :mod:`nopeek.models._external`).
    """

    def __init__(self) -> None:
        super().__init__("model", plugins=ENTRY_GROUPS["model"], check=_check_spec)
        self._resolvers: dict[str, tuple[Callable[[str], ModelSpec], str]] = {}

    def resolver(self, prefix: str, resolve: Callable[[str], ModelSpec], usage: str) -> None:
        """Resolve names ``prefix:rest`` with ``resolve(rest)``; ``usage`` is shown on a miss."""
        if prefix in self._resolvers:
            raise KeyError(f"model resolver {prefix!r} registered twice")
        self._resolvers[prefix] = (resolve, usage)

    def get(self, name: str) -> ModelSpec:
        prefix, sep, rest = name.partition(":")
        if sep and name not in self and prefix in self._resolvers:
            return self._resolvers[prefix][0](rest)
        try:
            return super().get(name)
        except ConfigError as exc:
            usages = ", ".join(usage for _, usage in self._resolvers.values())
            raise ConfigError(f"{exc}{', ' + usages if usages else ''}") from None


MODELS = ModelRegistry()


def missing_cut(name: str) -> ConfigError:
    """The error for a model without a default cut (torchvision:, module:): pass --cut."""
    hint = f"`nopeek models --model {name}` lists its cuts"
    try:
        spec = MODELS.get(name)
        shape = spec.input_shapes[0] if spec.input_shapes else spec.example_shape
        if shape:
            model = build_model(name, input_shape=shape, n_classes=10)
            hint = f"e.g. {', '.join(_few_cuts(model))} ({hint})"
    except NopeekError:
        pass  # only the hint is lost: the model's own error comes when it is built
    return ConfigError(f"model {name!r} has no default cut; pass --cut, {hint}")


def _few_cuts(model: nn.Module, k: int = 5) -> list[str]:
    """A few cuts that carry one tensor, outermost first."""
    from nopeek.models.fx_split import cut_info

    single = [c.name for c in cut_info(model) if len(c.carries) == 1]
    depth = min((c.count(".") for c in single), default=0)
    return [c for c in single if c.count(".") == depth][:k]


def build_model(name: str, *, input_shape: Sequence[int], n_classes: int) -> nn.Module:
    """Build the reference model ``name`` for inputs of ``input_shape`` (no batch dim).

    >>> m = build_model("digits-cnn", input_shape=(1, 8, 8), n_classes=10)
    >>> cut_names(m)
    ['conv1', 'conv2', 'fc1']
    """
    spec = MODELS.get(name)
    shape = tuple(int(s) for s in input_shape)
    if spec.input_shapes and shape not in spec.input_shapes:
        want = " or ".join(str(s) for s in spec.input_shapes)
        raise ConfigError(
            f"model {name!r} takes inputs of shape {want}, the data have {shape}; "
            f"pick a model that fits (see `nopeek models`)"
        )
    if n_classes < 2:
        raise ConfigError(f"n_classes must be >= 2, got {n_classes}")
    return spec.build(shape, n_classes)


def cut_names(model: nn.Module) -> list[str]:
    """Names of the places a model can be cut.

    An ``nn.Sequential``: after every named block but the last. Any other module: every module
    path where a cut is valid (see :mod:`nopeek.models.fx_split`), in execution order.
    """
    if not isinstance(model, nn.Sequential):
        from nopeek.models.fx_split import fx_cut_names

        return fx_cut_names(model)
    return [name for name, _ in model.named_children()][:-1]


def _use_fx(model: nn.Module, cuts: Sequence[str]) -> bool:
    """fx for any module but an ``nn.Sequential`` cut only at its named blocks (the fast path,
    unchanged) or at names that are no module of it (its usual unknown-cut error)."""
    if not isinstance(model, nn.Sequential):
        return True
    top = {name for name, _ in model.named_children()}
    inner = set(dict(model.named_modules())) - top - {""}
    return any(c in inner for c in cuts)


def split(model: nn.Module, cuts: str | Sequence[str]) -> list[nn.Module]:
    """Cut ``model`` after each named block in ``cuts``; returns ``len(cuts) + 1`` segments.

    The segments share the model's parameters (no copy), so training the segments trains the
    model. Cuts must be valid and in the model's order. An ``nn.Sequential`` is cut into
    ``nn.Sequential`` s of its named blocks; any other module that ``torch.fx`` can trace is cut
    at module paths (``layer2``, ``features.10``) into ``fx.GraphModule`` s; where a skip
    connection crosses a cut, the segment before returns a tuple and the one after takes its
    elements as inputs (see :mod:`nopeek.models.fx_split`).

    >>> m = build_model("digits-cnn", input_shape=(1, 8, 8), n_classes=10)
    >>> client, server = split(m, "conv2")
    >>> list(dict(client.named_children()))
    ['conv1', 'conv2']
    """
    cuts = [cuts] if isinstance(cuts, str) else list(cuts)
    if cuts and _use_fx(model, cuts):
        from nopeek.models.fx_split import split_fx

        return [*split_fx(model, cuts)]
    valid = cut_names(model)
    if not cuts:
        raise CutError(f"no cut given; choose one or more of: {', '.join(valid)}")
    for cut in cuts:
        if cut not in valid:
            raise CutError(f"unknown cut {cut!r} for this model; choose one of: {', '.join(valid)}")
    positions = [valid.index(c) for c in cuts]
    if positions != sorted(set(positions)):
        raise CutError(
            f"cuts {','.join(cuts)} must be distinct and in model order ({', '.join(valid)})"
        )
    blocks = list(model.named_children())
    bounds = [0] + [p + 1 for p in positions] + [len(blocks)]
    return [nn.Sequential(OrderedDict(blocks[a:b])) for a, b in zip(bounds[:-1], bounds[1:])]
