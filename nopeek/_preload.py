"""Imported by the fork server of :mod:`nopeek.workers`: the run code, each module guarded
(:func:`nopeek.workers.preload`), so that a module that fails to import leaves no traceback."""

from nopeek.workers import preload

preload()
