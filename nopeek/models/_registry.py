"""Model registry, cut names and ``split``."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from nopeek.errors import ConfigError, CutError
from nopeek.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    """How to build one reference model.

    ``build(input_shape, n_classes)`` returns an ``nn.Sequential`` of named blocks;
    ``input_kind`` is "image" or "tabular"; ``default_cut`` is what the CLI uses when no cut is
    given.
    """

    name: str
    description: str
    build: Callable[[tuple[int, ...], int], nn.Sequential]
    input_kind: str
    default_cut: str
    cuts: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...] = ()


MODELS: Registry[ModelSpec] = Registry("model")


def build_model(name: str, *, input_shape: Sequence[int], n_classes: int) -> nn.Sequential:
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


def cut_names(model: nn.Sequential) -> list[str]:
    """Names of the places a model can be cut: after every named block but the last."""
    return [name for name, _ in model.named_children()][:-1]


def split(model: nn.Sequential, cuts: str | Sequence[str]) -> list[nn.Sequential]:
    """Cut ``model`` after each named block in ``cuts``; returns ``len(cuts) + 1`` segments.

    The segments share the model's parameters (no copy), so training the segments trains the
    model. Cuts must be valid and in the model's order.

    >>> m = build_model("digits-cnn", input_shape=(1, 8, 8), n_classes=10)
    >>> client, server = split(m, "conv2")
    >>> list(dict(client.named_children()))
    ['conv1', 'conv2']
    """
    cuts = [cuts] if isinstance(cuts, str) else list(cuts)
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
