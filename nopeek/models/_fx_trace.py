"""Tracing for :mod:`nopeek.models.fx_split`: a torch.fx trace that records, for every node,
the module paths it ran in, and keeps whole (opaque) the submodules it cannot cut inside.

Kept whole: a submodule fx cannot trace (data-dependent control flow, ``len`` of a tensor), a
submodule that reads its own buffers (so that moving the model to a device moves what the
segments read), and a submodule whose graph differs between train and eval mode (``if
self.training:``, stochastic depth). Every instance of such a submodule's class is kept whole
with it (same code, same reason). The model's own ``forward`` must trace, the same in both modes.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

from torch import fx, nn

from nopeek.errors import CutError

log = logging.getLogger(__name__)

_MAX_RETRIES = 64


class _ScopeTracer(fx.Tracer):
    """An fx tracer that records the module paths each node was created in, keeps the
    ``opaque`` modules whole, and notes the innermost module where tracing failed."""

    def __init__(self, opaque: Sequence[str]) -> None:
        super().__init__()
        self.opaque = frozenset(opaque)
        self.paths: list[str] = []
        self.failed_at: str | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self.opaque or super().is_leaf_module(
            m, module_qualified_name
        )

    def call_module(
        self,
        m: nn.Module,
        forward: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        path = self.path_of_module(m)
        self.paths.append(path)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_at is None:
                self.failed_at = path
            raise
        finally:
            self.paths.pop()

    def create_node(self, *args: Any, **kwargs: Any) -> fx.Node:
        node = super().create_node(*args, **kwargs)
        node.meta["nopeek_scope"] = tuple(self.paths)
        return node


def scope_of(node: fx.Node | None) -> str:
    """The innermost module a node ran in, quoted, or "the model's forward"."""
    scope = node.meta.get("nopeek_scope", ()) if node is not None else ()
    return repr(scope[-1]) if scope else "the model's forward"


def _concrete_args(model: nn.Module) -> dict[str, Any]:
    """Every ``forward`` parameter after the input, fixed at its default."""
    params = [
        p
        for p in inspect.signature(model.forward).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if not params:
        raise CutError(f"{type(model).__name__}.forward takes no input; nopeek feeds it one tensor")
    extra = [p for p in params[1:] if p.default is p.empty]
    if extra:
        raise CutError(
            f"{type(model).__name__}.forward takes {len(params)} inputs "
            f"({', '.join(p.name for p in params)}) but nopeek feeds one tensor; wrap the model "
            "in a module whose forward(x) calls it"
        )
    return {p.name: p.default for p in params[1:]}


def first_line(exc: BaseException) -> str:
    """An exception's first line, without terminal colour codes or a final period."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    return (text[0] if text else type(exc).__name__).rstrip(".")


def _keep_whole(model: nn.Module, path: str, opaque: dict[str, str], why: str) -> None:
    """Make ``path`` and every other instance of its class opaque (same code, same reason)."""
    kind = type(model.get_submodule(path))
    for other, m in model.named_modules():
        if other and type(m) is kind:
            opaque.setdefault(other, why)
    opaque[path] = why


def _trace_once(model: nn.Module, opaque: dict[str, str]) -> fx.Graph:
    """Trace ``model``; a submodule that fails is made opaque and the trace retried."""
    concrete = _concrete_args(model)
    for _ in range(_MAX_RETRIES):
        tracer = _ScopeTracer(list(opaque))
        try:
            return tracer.trace(model, concrete_args=concrete or None)
        except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError, ...
            where, why = tracer.failed_at, first_line(exc)
            if not where or where in opaque:
                raise CutError(
                    f"torch.fx cannot trace {type(model).__name__}.forward ({why}); move the "
                    "data-dependent part into a submodule (nopeek keeps it whole and cuts around "
                    "it), or pass an nn.Sequential of blocks"
                ) from exc
            log.info("keeping %s whole: torch.fx cannot trace it (%s)", where, why)
            _keep_whole(model, where, opaque, f"torch.fx cannot trace it: {why}")
    raise CutError(
        f"torch.fx cannot trace {len(opaque)} submodules of {type(model).__name__}; pass an "
        "nn.Sequential of blocks"
    )


def _buffer_owners(model: nn.Module, graph: fx.Graph) -> set[str]:
    """Submodules (not the root) whose own buffers the graph reads directly."""
    owners = set()
    for n in graph.nodes:
        if n.op == "get_attr":
            path, _, field = str(n.target).rpartition(".")
            if path and field in model.get_submodule(path)._buffers:
                owners.add(path)
    return owners


def _code(graph: fx.Graph) -> str:
    return re.sub(r"_tensor_constant\d+", "_tensor_constant", graph.python_code("self").src)


def _trace_train(model: nn.Module, opaque: dict[str, str]) -> fx.Graph:
    """Trace in train mode; submodules that read their own buffers are then kept whole."""
    while True:
        graph = _trace_once(model, opaque)
        owners = _buffer_owners(model, graph) - set(opaque)
        if not owners:
            return graph
        opaque.update((path, "it reads its own buffers") for path in sorted(owners))


def _first_difference(a: fx.Graph, b: fx.Graph) -> fx.Node | None:
    """The first node of ``a`` that differs from ``b`` (None when the programs are equal)."""
    if _code(a) == _code(b):
        return None

    def key(n: fx.Node) -> tuple[str, str, str, str]:
        return (n.op, str(n.target), str(n.args), str(n.kwargs))

    pairs = zip(a.nodes, b.nodes)
    last: fx.Node = list(a.nodes)[-1]
    return next((x for x, y in pairs if key(x) != key(y)), last)


def trace_graph(model: nn.Module) -> tuple[fx.Graph, dict[str, str]]:
    """Trace ``model``; train and eval mode must give the same graph. Returns the graph (each
    node's ``meta["nopeek_scope"]``: the module paths it ran in) and the opaque modules with why.

    Kept whole (opaque): submodules fx cannot trace, submodules that read their own buffers (so
    that moving the model to a device moves what the segments read), and submodules whose
    forward differs between train and eval mode (``if self.training:``, stochastic depth).
    """
    opaque: dict[str, str] = {}
    modes = [(m, m.training) for m in model.modules()]
    std = fx.Tracer()
    try:
        for _ in range(_MAX_RETRIES):
            model.train(True)
            graph = _trace_train(model, opaque)
            model.train(False)
            first = _first_difference(graph, _trace_once(model, dict(opaque)))
            if first is None:
                return graph, opaque
            scope = first.meta.get("nopeek_scope", ())
            free = [
                s
                for s in reversed(scope)
                if s not in opaque and not std.is_leaf_module(model.get_submodule(s), s)
            ]
            if not free:
                raise CutError(
                    f"{type(model).__name__}.forward runs a different graph in train and eval "
                    f"mode (near {scope_of(first)}); use modules such as nn.Dropout instead of "
                    "`if self.training:` in forward, or move that branch into a submodule"
                )
            log.info("keeping %s whole: it runs differently in train and eval mode", free[0])
            _keep_whole(model, free[0], opaque, "it runs differently in train and eval mode")
    finally:
        for m, mode in modes:
            m.training = mode
    raise CutError(f"cannot trace {type(model).__name__}; pass an nn.Sequential of blocks")
