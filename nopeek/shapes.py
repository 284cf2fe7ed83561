"""Check, before training, that each cut's output fits the segment that reads it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nopeek.errors import CutShapeError
from nopeek.topology import DATA_PREFIX, Topology


def expected_input(module: nn.Module) -> str:
    """Describe what a segment expects from its first layer with a fixed input size."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            return f"(N, {layer.in_features})"
        if isinstance(layer, nn.modules.conv._ConvNd):
            return f"(N, {layer.in_channels}, ...)"
    return "another shape"


@torch.no_grad()
def check_shapes(topology: Topology, x: Tensor) -> None:
    """Run two samples through the topology; a mismatch names both shapes.

    ``x``: (2, *input_shape) raw inputs. Raises :class:`CutShapeError`.
    """
    outputs: dict[str, Tensor] = {}
    was_training = {id(n.module): n.module.training for n in topology.nodes}
    for node in topology.nodes:
        node.module.eval()
    try:
        for node in topology.nodes:
            args = [x if s.startswith(DATA_PREFIX) else outputs[s] for s in node.inputs]
            try:
                outputs[node.name] = node.module(*args)
            except RuntimeError as exc:
                src = next((s for s in node.inputs if not s.startswith(DATA_PREFIX)), None)
                given = tuple(args[0].shape[1:])
                where = f"cut {topology.node(src).cut!r}" if src else "the data"
                raise CutShapeError(
                    f"segment {node.name!r} expects {expected_input(node.module)} but {where} "
                    f"gives (N, {', '.join(map(str, given))}); choose another cut or model "
                    f"({str(exc).splitlines()[0][:80]})"
                ) from None
    finally:
        for node in topology.nodes:
            node.module.train(was_training[id(node.module)])
