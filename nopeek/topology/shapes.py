"""Check, before training, that each cut's output fits the segment that reads it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nopeek.errors import CutShapeError
from nopeek.topology.graph import DATA_PREFIX, Topology


def expected_input(module: nn.Module) -> str:
    """Describe what a segment expects from its first layer with a fixed input size."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            return f"(N, {layer.in_features})"
        if isinstance(layer, nn.modules.conv._ConvNd):
            return f"(N, {layer.in_channels}, ...)"
    return "another shape"


@torch.no_grad()
def check_shapes(topology: Topology, x: Tensor, *, nodes: Sequence[str] | None = None) -> None:
    """Run two samples through ``nodes`` of the topology (default all); a mismatch names both
    shapes. Each data node reads its party's own view of ``x`` (a vertical client its slice).

    ``x``: (2, *input_shape) raw inputs. Raises :class:`CutShapeError`.
    """
    plan = list(nodes) if nodes is not None else [n.name for n in topology.nodes]
    views = topology.views({"x": x, "y": torch.zeros(len(x), dtype=torch.long)})
    outputs: dict[str, Tensor] = {}
    modules = [_module(topology, n) for n in plan]
    was_training = {id(m): m.training for m in modules}
    for m in modules:
        m.eval()
    try:
        for name in plan:
            node, module = topology.node(name), _module(topology, name)
            args = [
                views[node.party][s[len(DATA_PREFIX) :]]
                if s.startswith(DATA_PREFIX)
                else outputs[s]
                for s in node.inputs
                if s.startswith(DATA_PREFIX) or s in outputs
            ]
            try:
                outputs[name] = module(*args)
            except RuntimeError:
                src = next((s for s in node.inputs if s in outputs), None)
                given = tuple(args[0].shape[1:])
                where = f"cut {topology.cut_of(src)!r}" if src else "the data"
                raise CutShapeError(
                    f"segment {name!r} expects {expected_input(module)} but {where} "
                    f"gives (N, {', '.join(map(str, given))}); choose another cut or model"
                ) from None
    finally:
        for m in modules:
            m.train(was_training[id(m)])


def _module(topology: Topology, name: str) -> nn.Module:
    module = topology.node(name).module
    if module is None:
        raise ValueError(f"node {name!r} has no segment here to run")
    return module
