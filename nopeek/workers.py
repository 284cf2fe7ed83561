"""Worker processes for runs in parallel: a fork server that imports the run code once.

A sweep's or a benchmark's runs go to a pool of worker processes. Started with ``spawn``, every
worker imported torch and nopeek's training and attack code itself (3.6 s of CPU each on the
development machine, 1.5 s of it ``torch._dynamo``, which ``torch.optim`` pulls in on its first
optimizer). Here the workers are forked from a fork server (``multiprocessing``'s
``forkserver`` start method) that has imported :data:`RUN_MODULES` once: a worker starts in
milliseconds. The fork server is a fresh interpreter (exec'd, not forked from the caller), so
it holds no thread pool and no state of the caller; every run seeds its own streams, so the
numbers are the ones a spawned worker gives.

A command that will run a pool calls :func:`warm` first thing, so that the server imports while
the command itself imports and plans (two cores busy instead of one). Where ``forkserver`` is
not available (Windows), workers are spawned as before. The server lives as long as the process
that started it: in a notebook, code changed on disk after its first sweep (an edited plug-in)
reaches the workers only after a restart of the kernel.

>>> ctx = worker_context()
>>> ctx.get_start_method() in ("forkserver", "spawn")
True
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import sys
from collections.abc import Sequence
from multiprocessing.context import BaseContext

__all__ = ["RUN_MODULES", "imported", "preload", "warm", "worker_context"]

log = logging.getLogger(__name__)

RUN_MODULES: tuple[str, ...] = (
    "torch._dynamo",  # imported by torch.optim's first optimizer: once here, not per worker
    "nopeek.training.trainer",
    "nopeek.attacks",
    "nopeek.defenses",
    "nopeek.eval.sweep",
    "nopeek.eval.benchmark",
)
"""What a worker of a sweep or a benchmark runs, imported once by the fork server."""

_SERVER_PRELOAD = ["nopeek._preload"]  # imports RUN_MODULES through preload(), guarded


def worker_context() -> BaseContext:
    """The ``multiprocessing`` context to start run workers with (for ``ProcessPoolExecutor``).

    ``forkserver`` with :data:`RUN_MODULES` imported by the server, started now if it is not running
    yet (a server already started, by :func:`warm`, is reused as it is); ``spawn`` where the
    platform has no ``forkserver`` or the server cannot start (it needs a Unix socket in the
    temporary folder): slower to start, the same runs.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        from multiprocessing import forkserver  # (POSIX only)

        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_SERVER_PRELOAD)
        try:
            forkserver.ensure_running()
            return ctx
        except OSError as exc:
            log.warning("cannot start a fork server (%s); spawning the workers instead", exc)
    return multiprocessing.get_context("spawn")


def warm() -> None:
    """Start the fork server now, so that it imports :data:`RUN_MODULES` while the caller goes on.

    Returns at once (the server imports in its own process); a no-op without ``forkserver``.
    """
    worker_context()


def imported(modules: Sequence[str] = RUN_MODULES) -> list[str]:
    """Those of ``modules`` this process has imported: in a worker of :func:`worker_context`,
    all of them before its first task (they came with the fork)."""
    return [name for name in modules if name in sys.modules]


def preload(modules: Sequence[str] = RUN_MODULES) -> dict[str, str]:
    """Import ``modules``, each on its own: what the fork server runs before it forks anyone.

    A module that fails to import (a broken plug-in its import loads) is left out, and its
    error returned by name, instead of a traceback from the server on the command's stderr: a
    worker that needs it imports it again and fails there, where the run reports it in one
    line.
    """
    failed = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any import error: the worker meets it again
            failed[name] = f"{type(exc).__name__}: {exc}"
    return failed
