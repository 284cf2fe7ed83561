"""Cut any ``torch.fx``-traceable model at a named layer.

The model is traced once into a graph whose nodes are in execution (topological) order. A cut
is named by a module path (``layer2``, ``features.10``, ``encoder.block3``) and sits right after
the last node that runs inside that module. The values that **cross** the cut are the values
computed at or before it that some later node reads. A cut is valid iff

1. the module exists, the forward runs it, and something runs after it;
2. no model input crosses it (else the raw input would travel past the cut: the cut is not on
   every path from the input to the output);
3. what crosses is tensors (not a size or a Python number computed before the cut);
4. no weight (parameter or buffer) is used on both sides of it (each party holds its own).

A valid cut carries one tensor, or several when a skip connection crosses it: the segment
before then returns a **tuple** of them (in execution order) and the segment after takes the
tuple's elements as its positional inputs, ``server(*client(x))``. Segments are
``fx.GraphModule`` s that call the model's own submodules and parameters (no copies), so
training the segments trains the model, and composing them gives exactly its output.

A submodule that fx cannot trace (data-dependent control flow, ``len`` of a tensor, ...) is kept
whole as one opaque layer: cuts before or after it work, a cut inside it says why not. The
model's own ``forward`` must be traceable, and must take the same path in train and eval mode
(``nn.Dropout``/``nn.BatchNorm`` switch modes at run time and are fine; ``if self.training:``
in a traced forward is not). A submodule that reads its own buffers is kept whole too, so that
``model.to(device)`` after splitting moves what the segments read; a buffer that the model's
own ``forward`` reads directly is shared with the segment only until it is moved (split after
moving such a model). Further ``forward`` parameters after the input are fixed at their
defaults.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from nopeek.errors import CutError
from nopeek.models._fx_trace import scope_of, trace_graph

_COMPUTE = ("call_module", "call_function", "call_method")
_INPLACE_OPS = {
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    operator.ifloordiv,
    operator.imod,
    operator.ipow,
    operator.iand,
    operator.ior,
    operator.ixor,
    operator.setitem,
}
_SCALAR_METHODS = {"size", "dim", "numel", "item", "tolist", "nelement", "__len__", "ndimension"}
_SCALAR_ATTRS = {"shape", "dtype", "device", "ndim", "layout", "is_cuda", "requires_grad"}


@dataclass(frozen=True)
class CutInfo:
    """One valid cut: its ``name`` (a module path), what crosses it (``carries``: the producing
    module path or op of each value) and, when an example input was given, each value's shape
    without the batch dimension (``shapes``)."""

    name: str
    carries: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...] = ()


class Traced:
    """A traced model: its graph and, for every module path, where a cut at it would sit.

    ``ends[path]`` is the position (in ``nodes``) of the last node run inside module ``path``;
    ``opaque[path]`` says why a module is kept whole.
    """

    def __init__(self, model: nn.Module, graph: fx.Graph, opaque: dict[str, str]) -> None:
        self.model = model
        self.graph = graph
        self.opaque = opaque
        self.nodes = list(graph.nodes)
        self.pos = {n: i for i, n in enumerate(self.nodes)}
        self.ends: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            if n.op in _COMPUTE:
                for path in n.meta.get("nopeek_scope", ()):
                    self.ends[path] = i
        self.last_compute = max(
            (i for i, n in enumerate(self.nodes) if n.op in _COMPUTE), default=-1
        )
        self.last_use = {n: max((self.pos[u] for u in n.users), default=-1) for n in self.nodes}
        self._weights = self._weight_spans()

    def _weight_spans(self) -> dict[str, tuple[int, int]]:
        """For every weight (parameter or buffer) the first and last position that uses it: a
        layer's weights where the layer runs, a weight read directly where its readers run."""
        names: dict[int, str] = {}
        for name, t in [*self.model.named_parameters(), *self.model.named_buffers()]:
            names.setdefault(id(t), name)
        spans: dict[str, tuple[int, int]] = {}
        for i, n in enumerate(self.nodes):
            if n.op == "call_module":
                sub = self.model.get_submodule(str(n.target))
                used, lo, hi = [*sub.parameters(), *sub.buffers()], i, i
            elif n.op == "get_attr" and n.users:
                used = [_fetch(self.model, str(n.target))]
                lo, hi = min(self.pos[u] for u in n.users), self.last_use[n]
            else:
                continue
            for t in used:
                weight = names.get(id(t))
                if weight is not None:
                    a, b = spans.get(weight, (lo, hi))
                    spans[weight] = (min(a, lo), max(b, hi))
        return spans

    def crossing(self, p: int) -> list[fx.Node]:
        """Values computed at or before position ``p`` that a later node reads, in order."""
        return [n for n in self.nodes[: p + 1] if n.op != "get_attr" and self.last_use[n] > p]

    def problem(self, name: str) -> str | None:
        """Why ``name`` is not a valid cut (the rest of a one-line message), or None."""
        if name not in self.ends:
            inside = next((o for o in self.opaque if name.startswith(o + ".")), None)
            if inside is not None:
                return (
                    f"cut {name!r} lies inside {inside!r}, which nopeek keeps whole "
                    f"({self.opaque[inside]}); cut at {inside!r} or outside it"
                )
            if name in dict(self.model.named_modules()):
                return f"module {name!r} never runs in the model's forward; pick another cut"
            return f"unknown cut {name!r}: the model has no module of that name"
        p = self.ends[name]
        if p >= self.last_compute:
            return f"nothing runs after cut {name!r} (it ends the model); pick an earlier cut"
        crossing = self.crossing(p)
        raw = [n for n in crossing if n.op == "placeholder"]
        if raw:
            reader = min((u for u in raw[0].users if self.pos[u] > p), key=self.pos.__getitem__)
            where = scope_of(reader)
            return (
                f"cut {name!r} is not on every path from the input: {where} reads the raw "
                f"input after it; pick another cut, or wrap the part before {where} in a module "
                "and cut after that module"
            )
        scalars = [n for n in crossing if not _is_tensor(n)]
        if scalars:
            return (
                f"cut {name!r} would send the non-tensor value {scalars[0].name!r} (e.g. a size "
                "computed before it and used after it); pick another cut"
            )
        split_weights = [w for w, (lo, hi) in self._weights.items() if lo <= p < hi]
        if split_weights:
            return (
                f"the weights {split_weights[0]!r} are used on both sides of cut {name!r} "
                "(they would be held by two parties); pick another cut"
            )
        return None

    def valid(self) -> list[str]:
        """The valid cut names, in execution order (outer modules first at the same point)."""
        paths = [p for p, _ in self.model.named_modules() if p and p in self.ends]
        ok = [p for p in paths if self.problem(p) is None]
        return sorted(ok, key=lambda p: self.ends[p])


def _fetch(model: nn.Module, target: str) -> Any:
    obj: Any = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _is_tensor(node: fx.Node) -> bool:
    """A static guess whether ``node`` produces a tensor (sizes and Python numbers do not)."""
    if node.op == "call_method" and node.target in _SCALAR_METHODS:
        return False
    if node.op == "call_function":
        if node.target is getattr:
            return len(node.args) < 2 or node.args[1] not in _SCALAR_ATTRS  # x.T is a tensor
        args = [a for a in node.args if isinstance(a, fx.Node)]
        if getattr(node.target, "__module__", None) in ("_operator", "operator", "builtins"):
            return any(_is_tensor(a) for a in args) if args else False
    return True


def _mutates(user: fx.Node, value: fx.Node, model: nn.Module) -> bool:
    """Whether ``user`` modifies ``value`` in place (a received leaf must not be)."""
    if not user.args or user.args[0] is not value:
        return False
    if user.op == "call_module":
        return bool(getattr(model.get_submodule(str(user.target)), "inplace", False))
    if user.op == "call_method":
        name = str(user.target)
        return name.endswith("_") and not name.endswith("__")
    if user.op == "call_function":
        name = getattr(user.target, "__name__", "")
        in_place = name.endswith("_") and not name.endswith("__")
        return user.target in _INPLACE_OPS or bool(user.kwargs.get("inplace")) or in_place
    return False


def trace(model: nn.Module) -> Traced:
    """Trace ``model`` (see :mod:`nopeek.models._fx_trace`) and index where each cut sits."""
    graph, opaque = trace_graph(model)
    return Traced(model, graph, opaque)


def _suggest(traced: Traced, valid: list[str], k: int = 6) -> str:
    single = [c for c in valid if len(traced.crossing(traced.ends[c])) == 1] or valid
    depth = min((c.count(".") for c in single), default=0)
    few = [c for c in single if c.count(".") == depth][:k]
    if not few:
        return "none (wrap parts of the model in modules, or pass an nn.Sequential of blocks)"
    more = f" (`nopeek models` / cut_names(model) list all {len(valid)})" if len(valid) > k else ""
    return ", ".join(few) + more


def _positions(traced: Traced, cuts: Sequence[str]) -> list[int]:
    valid: list[str] | None = None
    for cut in cuts:
        why = traced.problem(cut)
        if why is not None:
            valid = valid if valid is not None else traced.valid()
            raise CutError(f"{why}; valid cuts include: {_suggest(traced, valid)}")
    positions = [traced.ends[c] for c in cuts]
    for a, b, pa, pb in zip(cuts, cuts[1:], positions, positions[1:]):
        if pa == pb:
            raise CutError(f"cuts {a!r} and {b!r} are the same point of the model; keep one")
        if pa > pb:
            raise CutError(f"cuts {','.join(cuts)} must be in model order ({a!r} runs after {b!r})")
    return positions


def _segment(traced: Traced, lo: int, hi: int, index: int) -> fx.GraphModule:
    """The nodes in positions (lo, hi] as a module: inputs are the values crossing ``lo`` (the
    model's inputs for the first segment), outputs those crossing ``hi`` (or the model's)."""
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    first = lo < 0
    inputs = [n for n in traced.nodes if n.op == "placeholder"] if first else traced.crossing(lo)
    for n in inputs:
        if first:
            env[n] = g.node_copy(n)
            continue
        env[n] = g.placeholder(n.name)
        body = [u for u in n.users if lo < traced.pos[u] <= hi]
        if any(_mutates(u, n, traced.model) for u in body):
            env[n] = g.call_method("clone", (env[n],))  # a received leaf must not be modified

    def lookup(a: fx.Node) -> fx.Node:
        if a not in env and a.op == "get_attr":
            env[a] = g.node_copy(a)
        return env[a]

    for n in traced.nodes[lo + 1 : hi + 1]:
        if n.op in _COMPUTE:
            env[n] = g.node_copy(n, lookup)
    if hi >= len(traced.nodes) - 1:
        out = next(n for n in traced.nodes if n.op == "output")
        g.output(fx.map_arg(out.args[0], lookup))
        sends: tuple[str, ...] = ()
    else:
        crossing = traced.crossing(hi)
        values = [lookup(n) for n in crossing]
        g.output(values[0] if len(values) == 1 else tuple(values))
        sends = tuple(_describe(n) for n in crossing)
    g.lint()
    gm = fx.GraphModule(traced.model, g, class_name=f"Segment{index}")
    gm.meta["nopeek_takes"] = tuple(_describe(n) for n in inputs)
    gm.meta["nopeek_sends"] = sends
    return gm


def split_fx(model: nn.Module, cuts: Sequence[str]) -> list[fx.GraphModule]:
    """Cut a traceable ``model`` after each module path in ``cuts``: ``len(cuts) + 1`` segments.

    Each segment is an ``fx.GraphModule`` calling the model's own submodules (its parameters
    are the model's parameter objects). A segment whose cut carries several tensors returns a
    tuple that the next segment takes as positional inputs. Raises a one-line
    :class:`~nopeek.errors.CutError` for an untraceable model or an invalid cut.

    >>> import torch
    >>> from torch import nn
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)
    ...     def forward(self, x):
    ...         return self.b(torch.relu(self.a(x)) + x)
    >>> net = Net()
    >>> client, server = split_fx(net, ["a"])  # the skip `+ x` needs the raw input
    Traceback (most recent call last):
    ...
    nopeek.errors.CutError: cut 'a' is not on every path from the input: ...
    """
    traced = trace(model)
    positions = _positions(traced, list(cuts))
    bounds = [-1, *positions, len(traced.nodes) - 1]
    return [_segment(traced, a, b, i) for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]


def sends(segment: nn.Module) -> tuple[str, ...]:
    """What an fx segment returns at its cut: the producing module path (or op) of each value;
    empty for a last segment or a module that is no fx segment."""
    meta = getattr(segment, "meta", None)
    return tuple(meta.get("nopeek_sends", ())) if isinstance(meta, dict) else ()


def _describe(node: fx.Node) -> str:
    return str(node.target) if node.op == "call_module" else node.name


def cut_info(model: nn.Module, example: torch.Tensor | None = None) -> list[CutInfo]:
    """Every valid cut of a traceable ``model`` with what crosses it, in execution order.

    ``example``: (N, *input_shape), optional; when given, each crossing value's shape is
    measured on it (in eval mode, without gradients; the model's modes are restored).
    """
    traced = trace(model)
    names = traced.valid()
    shapes: dict[fx.Node, tuple[int, ...]] = {}
    if example is not None:
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with torch.no_grad():
                ShapeProp(fx.GraphModule(model, traced.graph)).propagate(example)
        finally:
            for m, mode in modes:
                m.training = mode
        for n in traced.nodes:
            meta = n.meta.get("tensor_meta")
            if meta is not None and hasattr(meta, "shape"):
                shapes[n] = tuple(meta.shape[1:])
    out = []
    for name in names:
        crossing = traced.crossing(traced.ends[name])
        found = tuple(shapes[n] for n in crossing if n in shapes) if shapes else ()
        out.append(CutInfo(name, tuple(_describe(n) for n in crossing), found))
    return out


def fx_cut_names(model: nn.Module) -> list[str]:
    """The valid cut names of a traceable ``model``, in execution order."""
    return trace(model).valid()
