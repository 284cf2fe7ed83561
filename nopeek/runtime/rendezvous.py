"""Where the parties of a torch.distributed run meet: rank 0's store, each process's claim of
its rank there, and the checks that make a failed meeting one line (a gloo transport this
build lacks, the C++ retries c10d prints while it waits).

:class:`~nopeek.runtime.launch.PartyLaunch` joins with these before it forms the process group.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

import torch.distributed as dist

from nopeek.errors import ConfigError

__all__ = ["check_gloo_transport", "claim_rank", "meeting_store", "quiet_stderr"]


def meeting_store(where: str, rank: int, world_size: int, timeout: float) -> dist.Store:
    """Rank 0's store at ``where`` (``host:port``; rank 0 hosts it, under torchrun its agent
    does), every wait on it bounded by ``timeout`` seconds."""
    limit = datetime.timedelta(seconds=timeout)
    store: dist.Store
    store, _, _ = next(dist.rendezvous(f"tcp://{where}", rank, world_size, timeout=limit))
    store.set_timeout(limit)
    return store


def claim_rank(store: dist.Store, rank: int, where: str) -> None:
    """Claim ``rank`` in the run's store; a rank another process claimed first is one line.

    The key counts the claims (``Store.add`` is atomic), per torchrun restart: a restarted
    worker group claims afresh in the store its agent keeps.
    """
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if store.add(f"nopeek/attempt{attempt}/rank{rank}", 1) > 1:
        raise ConfigError(
            f"rank {rank} is already taken: another process joined {where} as rank {rank}; "
            "start each rank once (check --rank), or give a second run its own --master-port"
        )


def check_gloo_transport() -> None:
    """Refuse a gloo transport this build lacks (``GLOO_DEVICE_TRANSPORT=TCP_TLS`` on a torch
    built without TLS) up front, naming it, instead of failing the join as a peer that never
    came. Gloo reads the variable once, when torch loads: the device it makes now is the one
    the process group would make."""
    transport = os.environ.get("GLOO_DEVICE_TRANSPORT")
    if not transport:
        return
    try:
        dist.ProcessGroupGloo.create_default_device()
    except RuntimeError as exc:
        why = "unsupported gloo device" if "unsupported gloo device" in str(exc) else str(exc)
        raise ConfigError(
            f"GLOO_DEVICE_TRANSPORT={transport}: this torch build's gloo cannot make that "
            f"transport ({why.splitlines()[0][:200]}); unset it, and for encryption between "
            "institutions use --transport grpc (mutual TLS)"
        ) from None


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Hold what native code writes to stderr (fd 2) while joining; replay it when logging is
    verbose (``nopeek -v``), drop it otherwise, so a failed join stays a one-line error."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if logging.getLogger("nopeek").isEnabledFor(logging.INFO):
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))
