"""Make every cut of a topology carry one tensor, and dry-run a topology's segments.

A segment cut with ``torch.fx`` where a skip connection crosses returns several tensors (see
:mod:`nopeek.models.fx_split`). :func:`pack_crossings` measures what each such cut carries on a
dry run and wraps the producing segment (and every segment reading it) in
:class:`~nopeek.models.packing.Packed`, so one message per cut carries all of it
(:mod:`nopeek.models.packing`). A topology whose cuts carry one tensor each is returned as is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor, nn

from nopeek.errors import CutError
from nopeek.models.fx_split import sends
from nopeek.models.packing import Layout, packed
from nopeek.topology.graph import DATA_PREFIX, Node, Topology


def dry_run(topology: Topology, x: Tensor) -> dict[str, Tensor | tuple[Tensor, ...]]:
    """Each node's output on ``x`` ((N, *input_shape), a few samples), in eval mode without
    gradients (the architecture is public; no party's data is involved). A server serving
    clients in turn reads one client's output at a time, as in training."""
    views = topology.views({"x": x, "y": torch.zeros(len(x), dtype=torch.long)})
    outs: dict[str, Tensor | tuple[Tensor, ...]] = {}
    with torch.no_grad():
        for node in topology.nodes:
            module = _module_of(topology, node)
            args: list[Tensor] = []
            for src in node.inputs:
                if src.startswith(DATA_PREFIX):
                    args.append(views[node.party][src[len(DATA_PREFIX) :]])
                elif src in outs:
                    value = outs[src]
                    args.extend(value if isinstance(value, tuple) else (value,))
                    if topology.strategy != "single":
                        break  # one client at a time
            if module is None or not args:
                continue
            was = module.training
            module.eval()
            try:
                outs[node.name] = module(*args)
            finally:
                module.train(was)
    return outs


def _module_of(topology: Topology, node: Node) -> nn.Module | None:
    if node.module is not None:
        return node.module
    factory = topology.factories.get(node.name)
    return factory() if factory is not None else None


def _carries_several(topology: Topology, node: Node) -> bool:
    """Whether ``node``'s segment returns several tensors at its cut. A node whose party does
    not hold its segment yet (a relay client) is judged by a held segment ending at the same
    cut, and only built from its factory when there is none."""
    module = node.module
    if module is None:
        held = (n.module for n in topology.nodes if n.cut == node.cut and n.module is not None)
        module = next(held, None) or _module_of(topology, node)
    return module is not None and len(sends(module)) > 1


def pack_crossings(
    topology: Topology, input_shape: tuple[int, ...], dtype: torch.dtype = torch.float32
) -> Topology:
    """``topology`` with every cut that carries several tensors packed into one message.

    ``input_shape``, ``dtype``: one sample's shape and the inputs' dtype. Raises a one-line
    :class:`CutError` where a node that merges several inputs (a vertical fusion) would read
    such a cut.
    """
    producers = [n for n in topology.nodes if n.cut and _carries_several(topology, n)]
    if not producers:
        return topology
    outs = dry_run(topology, torch.zeros(2, *input_shape, dtype=dtype))
    layouts: dict[str, Layout] = {}
    for n in producers:
        out = outs[n.name]
        assert not isinstance(out, Tensor) and n.cut is not None  # a producer: several, at a cut
        layouts[n.name] = Layout.of(out, n.cut)
    for node in topology.nodes:
        read = [s for s in node.inputs if s in layouts]
        others = [s for s in node.inputs if not s.startswith(DATA_PREFIX)]
        if read and len(others) > 1 and topology.strategy == "single":
            cut = topology.cut_of(read[0])
            raise CutError(
                f"cut {cut!r} carries {len(layouts[read[0]].shapes)} tensors (a skip crosses "
                f"it) but {node.name!r} merges {len(others)} inputs; pick a cut at a block "
                "boundary (`nopeek models --model M` lists what crosses each cut)"
            )

    def wrap(node: Node, module: nn.Module) -> nn.Module:
        takes = next((layouts[s] for s in node.inputs if s in layouts), None)
        return packed(module, takes, layouts.get(node.name))

    nodes = [
        replace(n, module=None if n.module is None else wrap(n, n.module)) for n in topology.nodes
    ]
    factories = {
        name: _wrapped_factory(factory, topology.node(name), wrap)
        for name, factory in topology.factories.items()
    }
    return replace(topology, nodes=nodes, factories=factories)


def _wrapped_factory(
    factory: Callable[[], nn.Module],
    node: Node,
    wrap: Callable[[Node, nn.Module], nn.Module],
) -> Callable[[], nn.Module]:
    return lambda: wrap(node, factory())
