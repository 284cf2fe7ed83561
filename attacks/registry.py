"""The attack registry: name -> Attack class. ``nopeek attack --attack NAME`` resolves here.

An attack has one name, its class's ``name``: a built-in is registered by :func:`register` on
the class alone, and an installed package adds its attacks through the ``nopeek.attacks``
entry-point group (an ``Attack`` subclass or instance per entry point, the entry point named as
the attack is; see :mod:`nopeek.plugins`).
"""

from nopeek.attacks.base import Attack
from nopeek.plugins import ENTRY_GROUPS
from nopeek.registry import Registry


def _check(name: str, entry: object) -> None:
    if not (isinstance(entry, Attack) or (isinstance(entry, type) and issubclass(entry, Attack))):
        raise TypeError(f"{entry!r} is not an nopeek.attacks.Attack subclass or instance")
    if entry.name != name:
        raise TypeError(f"its class says name = {entry.name!r}, the entry point {name!r}")


ATTACKS: Registry = Registry("attack", plugins=ENTRY_GROUPS["attack"], check=_check)


def register(cls: type[Attack]) -> type[Attack]:
    """Register the attack class ``cls`` under its own ``name`` (a class decorator), so an
    attack is named once.

    >>> import nopeek.attacks
    >>> all(ATTACKS.get(name).name == name for name in ATTACKS)
    True
    """
    if not cls.name:
        raise TypeError(f"{cls.__name__} sets no name; give the attack class name = '...'")
    return ATTACKS.register(cls.name, cls)
