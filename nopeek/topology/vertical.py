"""Vertically partitioned split learning: clients hold different features of the same samples.

K clients (hospitals holding other modalities of the same patients) each run their own bottom
segment on their own slice of every sample's features, aligned by sample id; the server merges
what arrives (``concat`` along the last axis, ``sum`` or ``mean``) and runs the fusion top with
the labels (Vepakomma et al. 2018, "Split learning for health", vertically partitioned data).
With ``label_party="client0"`` the labels sit with one client instead, as in two-party VFL:
the server sends the logits to that client, which computes the loss and returns their gradient.

Built-in partitions: images by vertical strips (digits: left / right halves), tabular data by
column blocks (breast-cancer across 2 or 3 hospitals).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from nopeek.errors import ConfigError, CutError, CutShapeError
from nopeek.models import split
from nopeek.topology.builder import CLIENTS_OPTION, Configured, Option, TopologyBuilder, one_of
from nopeek.topology.graph import DATA_PREFIX, Node, Objective, Topology

MERGES = ("concat", "sum", "mean")
MERGE_OPTION = Option("merge", one_of("--merge", MERGES))
"""``--merge``: how the server joins the clients' cuts."""
LABEL_PARTY_OPTION = Option("label_party", default="server", only="vertical")
"""``--label-party``: the server, or the client that holds the labels (checked against the
parties when the topology is built). It moves the labels, so elsewhere it is refused."""


def _two_clients(clients: int) -> None:
    if clients < 2:
        raise ConfigError(f"vertical needs --clients >= 2 (one per feature slice), got {clients}")


def partition_bounds(width: int, k: int) -> list[tuple[int, int]]:
    """``k`` contiguous blocks covering ``range(width)``, sizes differing by at most one.

    >>> partition_bounds(30, 3)
    [(0, 10), (10, 20), (20, 30)]
    >>> partition_bounds(8, 3)
    [(0, 3), (3, 6), (6, 8)]
    """
    if k > width:
        raise ConfigError(
            f"cannot split {width} feature columns among {k} clients; use --clients <= {width}"
        )
    sizes = [width // k + (1 if i < width % k else 0) for i in range(k)]
    starts = [sum(sizes[:i]) for i in range(k)]
    return [(s, s + n) for s, n in zip(starts, sizes)]


def _bounds(width: int, k: int, widths: Sequence[int] | None) -> list[tuple[int, int]]:
    """The clients' column blocks: even (:func:`partition_bounds`), or ``widths`` in order."""
    if widths is None:
        return partition_bounds(width, k)
    if len(widths) != k or sum(widths) != width or min(widths) < 1:
        raise ConfigError(
            f"the {k} clients' feature counts {list(widths)} must be positive and add up to the "
            f"input's {width} columns"
        )
    starts = [sum(widths[:i]) for i in range(k)]
    return [(s, s + n) for s, n in zip(starts, widths)]


def _slicer(lo: int, hi: int) -> Callable[[Tensor], Tensor]:
    return lambda x: x[..., lo:hi].contiguous()


class Fusion(nn.Module):
    """Merge the clients' cut activations, adapt to the top's input if needed, run the top.

    ``forward(*z)``: each z (N, ...) from one client -> logits (N, classes).
    """

    def __init__(self, merge: str, top: nn.Module, adapter: nn.Module | None = None) -> None:
        super().__init__()
        self.merge = merge
        self.adapter = adapter if adapter is not None else nn.Identity()
        self.top = top

    def forward(self, *zs: Tensor) -> Tensor:
        if self.merge == "concat":
            z = torch.cat(zs, dim=-1)
        else:
            stacked = torch.stack(zs)
            z = stacked.sum(0) if self.merge == "sum" else stacked.mean(0)
        out: Tensor = self.top(self.adapter(z))
        return out


def _probe(bottom: nn.Module, shape: tuple[int, ...], client: str, cut: str) -> tuple[int, ...]:
    """The cut shape of a client's bottom on its slice (one line if it cannot run on it)."""
    try:
        with torch.no_grad():
            out = bottom.eval()(torch.zeros(2, *shape))
    except RuntimeError:
        out = None
    if isinstance(out, tuple):
        raise CutError(
            f"cut {cut!r} carries {len(out)} tensors (a skip crosses it) but the server merges "
            "the clients' outputs; pick a cut at a block boundary (`nopeek models --model M` "
            "lists what crosses each cut)"
        )
    if out is None or out.numel() == 0:
        raise CutShapeError(
            f"{client}'s bottom up to cut {cut!r} cannot run on its feature slice "
            f"{_fmt(shape)}; use fewer --clients or an earlier cut"
        )
    return tuple(out.shape[1:])


def _fmt(shape: tuple[int, ...]) -> str:
    return f"(N, {', '.join(map(str, shape))})"


def _merged_shape(shapes: list[tuple[int, ...]], merge: str) -> tuple[int, ...]:
    if merge == "concat":
        heads = {s[:-1] for s in shapes}
        if len(heads) != 1:
            raise CutShapeError(
                f"--merge concat joins the last axis, but the clients' cuts give "
                f"{' and '.join(_fmt(s) for s in shapes)}; "
                "give the clients equal slices or use another cut"
            )
        return (*shapes[0][:-1], sum(s[-1] for s in shapes))
    if len(set(shapes)) != 1:
        named = " and ".join(_fmt(s) for s in list(dict.fromkeys(shapes))[:2])
        raise CutShapeError(
            f"--merge {merge} needs equal cut shapes, but the clients' cuts give {named}; "
            "use --merge concat or give the clients equal slices"
        )
    return shapes[0]


def _adapter(merged: tuple[int, ...], expected: tuple[int, ...]) -> nn.Module | None:
    """A linear map from the merged shape to the one the top expects (None if they match)."""
    if merged == expected:
        return None
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(merged), math.prod(expected)),
        nn.Unflatten(1, expected),
    )


def vertical(
    model: nn.Module,
    cuts: Sequence[str],
    *,
    input_shape: tuple[int, ...],
    build_bottom: Callable[[tuple[int, ...], int], nn.Module],
    clients: int = 2,
    merge: str = "concat",
    label_party: str = "server",
    widths: Sequence[int] | None = None,
) -> Topology:
    """K clients with feature slices -> server fusion top (labels at the server or a client).

    ``model`` is the whole model for the full input (its top after the cut becomes the fusion
    top); ``build_bottom(slice_shape, k)`` builds client k's model for its slice (its part up to
    the cut is the bottom). Client k's slice is the k-th block of :func:`partition_bounds`, or
    with ``widths`` (each client's own columns) the k-th block of that many columns.

    >>> from nopeek.models import build_model
    >>> m = build_model("digits-cnn", input_shape=(1, 8, 8), n_classes=10)
    >>> t = vertical(m, ["conv2"], input_shape=(1, 8, 8),
    ...              build_bottom=lambda s, k: copy.deepcopy(m))
    >>> t.parties, [e.sender for e in t.edges()]
    (['client0', 'client1', 'server'], ['client0', 'client1'])
    """
    _two_clients(clients)
    MERGE_OPTION.check(merge)
    if len(cuts) != 1:
        raise ConfigError(f"vertical takes one cut (the clients' bottoms end there), got {cuts}")
    names = [f"client{k}" for k in range(clients)]
    if label_party not in ("server", *names):
        raise ConfigError(
            f"--label-party {label_party!r} holds no data in this run; choose server or one of "
            f"{', '.join(names)}"
        )
    bounds = _bounds(input_shape[-1], clients, widths)
    nodes, derived, shapes = [], {}, []
    owners: dict[str, str | tuple[str, ...]] = {}
    for k, (lo, hi) in enumerate(bounds):
        shape = (*input_shape[:-1], hi - lo)
        bottom = split(build_bottom(shape, k), cuts)[0]
        shapes.append(_probe(bottom, shape, names[k], cuts[0]))
        bottom.train()
        derived[f"x{k}"] = ("x", _slicer(lo, hi))
        owners[f"x{k}"] = names[k]
        nodes.append(Node(f"bottom{k}", names[k], bottom, (f"{DATA_PREFIX}x{k}",), cuts[0]))
    head, top = split(model, cuts)
    with torch.no_grad():
        expected = tuple(copy.deepcopy(head).eval()(torch.zeros(2, *input_shape)).shape[1:])
    fusion = Fusion(merge, top, _adapter(_merged_shape(shapes, merge), expected))
    inputs = tuple(n.name for n in nodes)
    if label_party == "server":
        nodes.append(Node("server", "server", fusion, inputs))
        objective = Objective("server", "y", "server")
    else:
        nodes.append(Node("server", "server", fusion, inputs, "logits"))
        nodes.append(Node("label_head", label_party, nn.Identity(), ("server",)))
        objective = Objective("label_head", "y", label_party)
    owners["y"] = label_party
    return Topology(
        "vertical",
        nodes,
        [objective],
        owners=owners,
        derived=derived,
        options={"clients": clients, "merge": merge, "label_party": label_party},
    )


def _rule(config: Configured) -> None:
    _two_clients(config.clients)


VERTICAL = TopologyBuilder(
    "vertical",
    lambda m, cuts, ctx: vertical(
        m,
        cuts,
        input_shape=ctx.input_shape,
        build_bottom=lambda shape, k: ctx.make_model(shape, ctx.n_classes, k + 1),
        clients=ctx.clients,
        merge=ctx.merge,
        label_party=ctx.label_party,
        widths=ctx.widths,
    ),
    options=(CLIENTS_OPTION, MERGE_OPTION, LABEL_PARTY_OPTION),
    rule=_rule,
)
