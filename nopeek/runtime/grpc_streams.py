"""The queues of a :class:`~nopeek.runtime.grpc_channel.GrpcChannel`: a long-lived stream a peer.

Once the hellos are exchanged, each party opens one client-streaming call
(``/nopeek.Wire/Stream``) to every peer and sends every later message on it: a send returns
once the message waits in this party's bounded :class:`Outbox` for that peer, gRPC's own thread
writes it, and the stream's status is its delivery report. A failed stream is named at this
party's next send, at its next receive from that peer, or at :meth:`Outbox.wait` when the
channel closes (which first delivers what is still queued). One call a message, waiting for the
peer's answer each time, cost about twice the CPU and latency a message on loopback.

The peer's server files what arrives under the role that the caller's certificate names (read
once a stream: a stream is one mutually authenticated connection) in that sender's bounded queue
of the :class:`Inbox`; once a stream ends, an :class:`Ended` follows its messages there, so a
receiver still waiting on a peer that finished, or died, is told at once, not at its deadline.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc

QUEUE_BOUND = 64  # messages a peer may have in flight to this party (the schedule needs 2)
GOODBYE = b""  # a stream's last message as its sender closes (a real one has a header)
PUT_TIMEOUT_S = 30.0  # how long a full queue holds a sender before its stream is refused
FINISHED = "it closed its connection (it finished or stopped: see its own log)"
BROKEN = "its connection broke (it died, or the network failed)"


@dataclass(frozen=True)
class Ended:
    """Queued after the last message of a sender's stream: why nothing more comes."""

    why: str


class Inbox:
    """Per-sender bounded queues of raw messages, filled by the gRPC server's threads.

    ``orderly`` holds the senders whose stream ended as they closed their channel (all they
    sent is queued); ``ended`` is set for a sender once its stream ended either way.
    """

    def __init__(self, peers: list[str]) -> None:
        self.queues: dict[str, queue.Queue[bytes | Ended]] = {
            p: queue.Queue(maxsize=QUEUE_BOUND) for p in peers
        }
        self.ended = {p: threading.Event() for p in peers}
        self.orderly: set[str] = set()

    def deliver(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """One message in one call (the hellos and a peer's last error)."""
        sender = self._sender(context)
        _put(self.queues[sender], request, context)
        return b""

    def stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        """A sender's stream: its messages in order, then an :class:`Ended` (the stream ended
        in order only after the sender's :data:`GOODBYE`: gRPC may end the iteration of a
        connection that broke as if the sender had closed it)."""
        import grpc

        sender = self._sender(context)
        box = self.queues[sender]
        with contextlib.suppress(grpc.RpcError):  # cancelled: the caller died, or this stops
            for request in requests:
                if request == GOODBYE:
                    self.orderly.add(sender)
                else:
                    _put(box, request, context)
        self._end(sender, FINISHED if sender in self.orderly else BROKEN)
        return b""

    def _sender(self, context: grpc.ServicerContext) -> str:
        import grpc

        sender = caller_role(context)
        if sender not in self.queues:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{sender!r} is no party of this job")
        return sender

    def _end(self, sender: str, why: str) -> None:
        # never blocks a server thread: a receiver that has 64 messages still to read learns
        # of the end at its deadline instead
        with contextlib.suppress(queue.Full):
            self.queues[sender].put_nowait(Ended(why))
        self.ended[sender].set()


def _put(box: queue.Queue[bytes | Ended], request: bytes, context: grpc.ServicerContext) -> None:
    import grpc

    try:
        box.put(request, timeout=PUT_TIMEOUT_S)
    except queue.Full:
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many messages in flight")


def caller_role(context: grpc.ServicerContext) -> str:
    """The common name of the caller's verified certificate ('' when there is none)."""
    # grpc gives a list of bytes per property; the grpc stubs say one bytes
    auth: Mapping[str, list[bytes]] = context.auth_context()  # type: ignore[assignment]
    names = auth.get("x509_common_name", [])
    return names[0].decode() if names else ""


class Outbox:
    """This party's stream to one peer: messages wait here, in order, until gRPC's thread
    writes them (at most :data:`QUEUE_BOUND`; a peer that reads nothing holds the sender).

    ``open_stream`` starts the client-streaming call on an iterator of messages;
    ``on_failure`` runs (on a gRPC thread) once the call ends with an error.
    """

    def __init__(
        self,
        open_stream: Callable[[Iterator[bytes]], grpc.Future[bytes]],
        on_failure: Callable[[Failure], None],
    ) -> None:
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUE_BOUND)
        self.call = open_stream(iter(self._queue.get, None))

        def ended(call: grpc.Future[bytes]) -> None:
            failure = _failure(call)
            if failure is not None:
                on_failure(failure)

        self.call.add_done_callback(ended)

    def failure(self) -> Failure | None:
        """How the stream failed (None while it runs, or when it ended well)."""
        return _failure(self.call) if self.call.done() else None

    def put(self, blob: bytes | None, deadline: float) -> bool:
        """Queue ``blob`` (None: the end of the stream); False when the queue stayed full until
        ``deadline``."""
        try:
            self._queue.put(blob, timeout=max(deadline - time.monotonic(), 0.0))
        except queue.Full:
            return False
        return True

    def wait(self, deadline: float) -> Failure | None:
        """End the stream once what is queued is written, and wait for the peer's answer until
        ``deadline``: None when all was delivered, else how it failed."""
        import grpc

        if not self.call.done() and self.put(GOODBYE, deadline) and self.put(None, deadline):
            with contextlib.suppress(grpc.FutureTimeoutError, grpc.FutureCancelledError):
                self.call.exception(timeout=max(deadline - time.monotonic(), 0.01))
        late = not self.call.done()
        self.call.cancel()  # (nothing once it ended)
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)  # gRPC's writing thread may still wait for a message
        if late:
            return Failure(grpc.StatusCode.DEADLINE_EXCEEDED, "no answer to the stream's end")
        return _failure(self.call)


@dataclass(frozen=True)
class Failure:
    """How a call failed: its gRPC status code and the first line of its details."""

    code: grpc.StatusCode
    detail: str


def _failure(call: grpc.Future[bytes]) -> Failure | None:
    """How the ended ``call`` failed; None when it ended well."""
    import grpc

    if call.cancelled():
        return Failure(grpc.StatusCode.CANCELLED, "cancelled by this party")
    exc = call.exception()
    if exc is None:
        return None
    if isinstance(exc, grpc.Call):
        return Failure(exc.code(), first_line(exc.details()))
    return Failure(grpc.StatusCode.UNKNOWN, first_line(str(exc)))


def first_line(text: str | None) -> str:
    """The first line of ``text`` (at most 200 characters; '' for none)."""
    return (text or "").partition("\n")[0][:200]
