"""A tiny name -> object registry used for datasets, models, topologies, attacks and defenses.

Modes are strings resolved in one place; a miss lists the valid names, so a typo on the command
line turns into a one-line error that says what to type instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from nopeek.errors import ConfigError

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

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

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
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of: {valid}") from None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
