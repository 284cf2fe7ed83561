"""The error hierarchy of nopeek.

Every error a user can cause is a ``NopeekError`` (a ``ValueError``) whose message names the
problem *and* the fix, in one line. The CLI prints ``error: <message>`` and exits with status 2
for these, and lets anything else (a bug) raise with its traceback.
"""

from __future__ import annotations


class NopeekError(ValueError):
    """Base class: a user-facing problem with a one-line message that names the fix."""


class ConfigError(NopeekError):
    """An option is out of range, unknown, or does not combine with another option."""


class CutError(NopeekError):
    """A cut name is unknown for the model, or cuts are given in the wrong order."""


class CutShapeError(NopeekError):
    """A segment's output does not fit the next segment's input (both shapes are named)."""


class DataError(NopeekError):
    """A data root is missing or empty, or the data contain NaN/inf or unusable labels."""


class CheckpointError(NopeekError):
    """A checkpoint is corrupt, truncated, or belongs to a different configuration."""


class ChannelError(NopeekError):
    """A message on a channel is malformed (shape, dtype, size) or carries autograd history."""


class PeerError(NopeekError):
    """A peer party did not answer (dead process, closed connection, timeout)."""


class ThreatModelError(NopeekError):
    """An attack asked for something its threat model does not grant, or cannot run on a run."""


class OutputError(NopeekError):
    """An output folder cannot be used: a file or a link, not writable, full, or not nopeek's."""


class TrainingError(NopeekError):
    """Training went wrong in a way the user can fix (it diverged: the loss became NaN/inf)."""


class PluginError(NopeekError):
    """An installed plug-in (entry point) cannot be loaded or does not give what its group takes."""
