"""Hooks from installed plugins: a config's defenses and malicious server, without upward imports.

The core cannot import :mod:`nopeek.defenses` or :mod:`nopeek.attacks` (they sit above it), yet
``train(TrainConfig(defenses=[...]))`` must apply what the config names. Packages that turn config
fields into :class:`~nopeek.hooks.CutHook` objects declare a *hook builder* in the entry-point
group ``nopeek.hooks`` (``pyproject.toml``)::

    [project.entry-points."nopeek.hooks"]
    defenses = "nopeek.defenses.spec:hooks_from_config"
    malicious-server = "nopeek.attacks.fsha:hooks_from_config"

A builder is a function ``(TrainConfig) -> list[CutHook]`` returning hooks for what it
understands (``[]`` otherwise), marked by :func:`hook_builder` with the config fields it handles.
:func:`build_hooks` calls every installed builder in entry-point name order (so defenses come
before the malicious server, and a checkpoint's hook states line up on resume) and refuses a
config naming a field that no installed builder handles.

**Plug-in entries.** A third-party package adds attacks, defenses, data sets and models by
declaring them in the entry-point groups of :data:`ENTRY_GROUPS`; each entry point names the
object itself, and it is registered under the entry point's name (an attack or a defense has one
name, its class's ``name``, which its entry point carries)::

    [project.entry-points."nopeek.attacks"]
    my-attack = "my_pkg.attacks:MyAttack"       # an Attack (class or instance), name = "my-attack"
    [project.entry-points."nopeek.defenses"]
    my-defense = "my_pkg.defenses:MyDefense"    # a Defense subclass with name = "my-defense"
    [project.entry-points."nopeek.datasets"]
    my-data = "my_pkg.data:SOURCE"              # a nopeek.data.DataSource, or a bare loader
    [project.entry-points."nopeek.models"]
    my-model = "my_pkg.models:SPEC"             # a nopeek.models.ModelSpec

A data set's loader ``(*, seed, data_root, download, max_train)`` returns a
:class:`~nopeek.data.Dataset` (three disjoint splits with ids); a ``DataSource(load,
default_model="mlp")`` also names the model a run takes without ``--model`` (a bare loader has
none, so a run on it must pass ``--model``).

The registries load them on the first lookup of a name that is not built in (and when they
list their names), so ``--attack my-attack`` and the rest work wherever a built-in name does.
A plug-in that fails to import, names the wrong kind of object, or takes a built-in's name is
a one-line :class:`~nopeek.errors.PluginError` naming the entry point and its package.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Container, Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from nopeek.errors import ConfigError, PluginError

if TYPE_CHECKING:  # a base module like this one, which imports nothing of nopeek's
    from nopeek.hooks import CutHook

GROUP = "nopeek.hooks"
# registry kind -> the entry-point group its plug-ins are declared in
ENTRY_GROUPS = {
    "attack": "nopeek.attacks",
    "defense": "nopeek.defenses",
    "dataset": "nopeek.datasets",
    "model": "nopeek.models",
}
HOOK_FIELDS = ("defenses", "malicious_server")  # config fields that only plugins turn into hooks


class HookConfig(Protocol):
    """What :func:`build_hooks` reads of a run's config: the fields that only plug-ins turn
    into hooks. Builders get the whole :class:`nopeek.config.TrainConfig`; this module, below
    the config, reads it through this Protocol and imports nothing of it."""

    defenses: list[str]
    malicious_server: str | None


Builder = Callable[[Any], "list[CutHook]"]
"""A hook builder: ``(TrainConfig) -> list[CutHook]``."""
B = TypeVar("B", bound=Callable[..., Any])


def hook_builder(*fields: str) -> Callable[[B], B]:
    """Mark a function as a hook builder for the config ``fields`` it handles.

    >>> @hook_builder("defenses")
    ... def build(config):
    ...     return []
    >>> build.handles
    ('defenses',)
    """
    unknown = sorted(set(fields) - set(HOOK_FIELDS))
    if unknown:
        raise ValueError(f"hook builders handle {HOOK_FIELDS}, not {unknown}")

    def mark(fn: B) -> B:
        fn.handles = tuple(fields)  # type: ignore[attr-defined]
        return fn

    return mark


def builders() -> dict[str, Builder]:
    """The installed hook builders by entry-point name, in name order."""
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    return {name: found[name].load() for name in sorted(found)}


def build_hooks(config: HookConfig) -> list[CutHook]:
    """The hooks that ``config``'s ``defenses`` and ``malicious_server`` name, from the plugins.

    Raises a one-line :class:`ConfigError` for a named field that no installed builder handles
    (and whatever the builders raise for bad specs). A config naming none builds nothing.

    >>> from nopeek.config import TrainConfig
    >>> build_hooks(TrainConfig())
    []
    >>> [h.name for h in build_hooks(TrainConfig(one_vs_rest=0, defenses=["max-norm"]))]
    ['max-norm']
    """
    named = [f for f in HOOK_FIELDS if getattr(config, f)]
    if not named:
        return []
    found = builders()
    handled = {f for fn in found.values() for f in getattr(fn, "handles", ())}
    missing = [f for f in named if f not in handled]
    if missing:
        raise ConfigError(
            f"the config names {missing[0]} {getattr(config, missing[0])!r} but no installed "
            f"package builds them (entry-point group {GROUP!r}); install nopeek with its "
            "defenses and attacks packages (pip install -e .)"
        )
    hooks: list[CutHook] = []
    for fn in found.values():
        hooks += fn(config)
    return hooks


def load_entries(
    group: str,
    kind: str,
    taken: Container[str],
    check: Callable[[str, object], None] | None = None,
) -> list[tuple[str, object]]:
    """The ``(name, object)`` pairs that installed packages declare in entry-point ``group``.

    Loaded in name order; ``check(name, obj)`` raises ``TypeError`` for an object the registry
    cannot take. Any failure (import error, wrong object, a name in ``taken``) is one
    :class:`PluginError` line naming the entry point and the package that declares it; nothing of
    the group is returned then.

    >>> load_entries("nopeek.no-such-group", "attack", taken=())
    []
    """
    found = sorted(entry_points(group=group), key=lambda ep: ep.name)
    out: list[tuple[str, object]] = []
    for ep in found:
        dist = getattr(ep, "dist", None)
        where = f"{kind} plug-in {ep.name!r} ({ep.value}) of package {dist.name if dist else '?'}"
        if ep.name in taken:
            raise PluginError(
                f"{where} takes the name of a built-in {kind}; rename its entry point"
            )
        try:
            obj = ep.load()
            if check is not None:
                check(ep.name, obj)
        except Exception as exc:  # a plug-in's own bug, reported with its name, not a traceback
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise PluginError(
                f"cannot load {where}: {reason}; fix or uninstall that package"
            ) from exc
        out.append((ep.name, obj))
    return out


def lazy_exports(
    package: str, table: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's PEP 562 ``__getattr__`` and ``__dir__`` for ``table`` (public name -> the
    module that defines it): each name is imported on first use and kept in the package, so
    importing the package pays for none of them (``nopeek --help`` imports no torch).

    >>> getattr_, dir_ = lazy_exports("nopeek", {"ConfigError": "nopeek.errors"})
    >>> getattr_("ConfigError").__name__, "ConfigError" in dir_()
    ('ConfigError', True)
    """

    def getattr_(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def dir_() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(table))

    return getattr_, dir_
