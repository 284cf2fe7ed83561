"""The attack registry: name -> Attack class. ``nopeek attack --attack NAME`` resolves here.

Installed packages add attacks through the ``nopeek.attacks`` entry-point group (an ``Attack``
subclass or instance per entry point; see :mod:`nopeek.plugins`).
"""

from nopeek.attacks.base import Attack
from nopeek.plugins import ENTRY_GROUPS
from nopeek.registry import Registry


def _check(name: str, entry: object) -> None:
    if not (isinstance(entry, Attack) or (isinstance(entry, type) and issubclass(entry, Attack))):
        raise TypeError(f"{entry!r} is not an nopeek.attacks.Attack subclass or instance")


ATTACKS: Registry = Registry("attack", plugins=ENTRY_GROUPS["attack"], check=_check)
