"""Multi-task split learning: one client's cut feeds several server heads, one per task.

The client sends one activation message per batch; the server runs every head on it, each head
against its own labels, and sends back one gradient: the sum of the heads' gradients at the
cut. The loss is the plain sum of the tasks' cross-entropies (every weight 1), so each head
gets the gradient it would get alone and the client's segment gets their sum.

Tasks are derived from the data set's labels: ``label`` (the data set's own classes; on digits
the digit), ``parity`` (label mod 2) and ``ge5`` (label >= 5, i.e. digits 5-9 vs 0-4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from nopeek.errors import ConfigError
from nopeek.models import split
from nopeek.registry import Registry
from nopeek.topology.builder import Option, TopologyBuilder
from nopeek.topology.graph import DATA_PREFIX, Node, Objective, Topology


@dataclass(frozen=True)
class Task:
    """A task derived from the labels: ``classes(n)`` classes, labels ``relabel(y)``."""

    name: str
    description: str
    classes: Callable[[int], int]
    relabel: Callable[[Tensor], Tensor]
    min_classes: int = 2


TASKS: Registry[Task] = Registry("task")
TASKS.register("label", Task("label", "the data set's own classes", lambda n: n, lambda y: y))
TASKS.register("digit", Task("digit", "the digit (same as label)", lambda n: n, lambda y: y))
TASKS.register("parity", Task("parity", "label mod 2", lambda n: 2, lambda y: y % 2))
TASKS.register("ge5", Task("ge5", "label >= 5", lambda n: 2, lambda y: (y >= 5).long(), 6))


def parse_tasks(text: str) -> list[str]:
    """``"digit,parity"`` -> ``["digit", "parity"]``; unknown names list the valid ones.

    >>> parse_tasks("digit, parity")
    ['digit', 'parity']
    """
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ConfigError("--tasks is empty; pass e.g. --tasks digit,parity")
    for name in names:
        TASKS.get(name)
    if len(set(names)) != len(names):
        raise ConfigError(f"--tasks lists a task twice: {text}; give each once")
    return names


def multi_task(
    model: nn.Module,
    cuts: Sequence[str],
    *,
    tasks: Sequence[str],
    n_classes: int,
    build_model: Callable[[int, int], nn.Module],
) -> Topology:
    """client -> one server head per task; labels (all derived tasks) at the server.

    ``build_model(classes, index)`` builds a fresh whole model with ``classes`` outputs for
    task ``index`` (its part after the cut is the head); the first task whose classes match the
    data set's uses ``model``'s own top, so ``tasks=["label"]`` is vanilla.

    >>> from nopeek.models import build_model
    >>> f = lambda c, i: build_model("digits-cnn", input_shape=(1, 8, 8), n_classes=c)
    >>> t = multi_task(f(10, 0), ["conv2"], tasks=["digit", "parity"], n_classes=10,
    ...                build_model=f)
    >>> [o.name for o in t.objectives], len(t.edges())
    (['digit', 'parity'], 2)
    """
    if len(cuts) != 1:
        raise ConfigError(f"multi-task takes one cut (the client's segment ends there), got {cuts}")
    client, own_top = split(model, cuts)
    nodes = [Node("client", "client", client, (f"{DATA_PREFIX}x",), cuts[0])]
    objectives, derived = [], {}
    owners: dict[str, str | tuple[str, ...]] = {"x": "client", "y": "server"}
    used_own = False
    for i, name in enumerate(tasks):
        task = TASKS.get(name)
        if n_classes < task.min_classes:
            raise ConfigError(
                f"task {name!r} needs at least {task.min_classes} classes, the data have "
                f"{n_classes}; choose another --tasks"
            )
        classes = task.classes(n_classes)
        if classes == n_classes and not used_own:
            head, used_own = own_top, True
        else:
            head = split(build_model(classes, i + 1), cuts)[1]
        key = f"y:{name}"
        derived[key] = ("y", task.relabel)
        owners[key] = "server"
        nodes.append(Node(f"head_{name}", "server", head, ("client",)))
        objectives.append(Objective(f"head_{name}", key, "server", name=name))
    return Topology(
        "multi-task", nodes, objectives, owners=owners, derived=derived, options={"tasks": tasks}
    )


TASKS_OPTION = Option("tasks", lambda text: tuple(parse_tasks(text)), everywhere=False)
"""``--tasks``: the tasks of multi-task, derived from the labels (checked by multi-task only)."""
MULTI_TASK = TopologyBuilder(
    "multi-task",
    lambda m, cuts, ctx: multi_task(
        m,
        cuts,
        tasks=ctx.tasks,
        n_classes=ctx.n_classes,
        build_model=lambda c, i: ctx.make_model(ctx.input_shape, c, 100 + i),
    ),
    options=(TASKS_OPTION,),
)
