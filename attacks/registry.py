"""The attack registry: name -> Attack class. ``nopeek attack --attack NAME`` resolves here."""

from nopeek.registry import Registry

ATTACKS: Registry = Registry("attack")
