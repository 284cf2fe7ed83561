"""``SplitEngine``: the name the two-party API knew the in-process runtime by.

One step of split training is the party protocol of :mod:`nopeek.runtime`: each party runs
its own nodes and every tensor between parties is a message on the channel. Only the gradient
message crosses a cut backwards, so each party's autograd graph ends at its cuts.
"""

from __future__ import annotations

from nopeek.runtime import InProcessRuntime, Penalty, StepOutput

SplitEngine = InProcessRuntime

__all__ = ["Penalty", "SplitEngine", "StepOutput"]
