"""A tiny name -> object registry used for datasets, models, topologies, attacks and defenses.

Modes are strings resolved in one place; a miss lists the valid names, so a typo on the command
line turns into a one-line error that says what to type instead.

A registry created with ``plugins="GROUP"`` also holds the entries that installed packages
declare in that entry-point group (see :mod:`nopeek.plugins` for the contract); they are loaded
on the first lookup of a name that is not built in, or when all names are listed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, cast

from nopeek.errors import ConfigError
from nopeek.plugins import load_entries

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to entries (factories, specs). ``kind`` is used in error messages.

    >>> r = Registry("colour")
    >>> _ = r.register("red", 1)
    >>> r.get("red")
    1
    >>> r.get("blue")
    Traceback (most recent call last):
    ...
    nopeek.errors.ConfigError: unknown colour 'blue'; choose one of: red
    """

    def __init__(
        self,
        kind: str,
        *,
        plugins: str | None = None,
        check: Callable[[str, object], None] | None = None,
    ) -> None:
        self.kind = kind
        self.plugins = plugins  # entry-point group of third-party entries, loaded lazily
        self.check = check  # (name, entry) -> None, raises TypeError saying what a plug-in lacks
        self._entries: dict[str, T] = {}
        self._plugins_loaded = plugins is None

    def load_plugins(self) -> None:
        """Register the entries of the installed plug-ins (once; a broken one raises a one-line
        :class:`~nopeek.errors.PluginError` naming it and its package, every time it is asked)."""
        if self._plugins_loaded or self.plugins is None:
            return
        for name, entry in load_entries(self.plugins, self.kind, self._entries, self.check):
            self._entries[name] = cast(T, entry)  # an object ``check`` accepted
        self._plugins_loaded = True

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name``; a second entry with the same name is a bug."""
        if name in self._entries:
            raise KeyError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str) -> Callable[[T], T]:
        """``@registry.decorator("name")`` registers the decorated object."""

        def wrap(entry: T) -> T:
            return self.register(name, entry)

        return wrap

    def get(self, name: str) -> T:
        """Return the entry for ``name`` or raise a ``ConfigError`` listing the valid names."""
        if name not in self._entries:
            self.load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of: {valid}") from None

    def names(self) -> list[str]:
        """All registered names (plug-ins included), sorted."""
        self.load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        if name not in self._entries and isinstance(name, str):
            self.load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self.load_plugins()
        return len(self._entries)
