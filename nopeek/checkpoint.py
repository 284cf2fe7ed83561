"""A run's ``checkpoint.pt``: its file name and a validated reader, for the attacks package.

The public home of :mod:`nopeek._checkpoint` (its implementation, which the trainer uses to
save, resume and restore).
"""

from nopeek._checkpoint import FILENAME, read

__all__ = ["FILENAME", "read"]
