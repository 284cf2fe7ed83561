"""The cross-institution channel: gRPC with mutual TLS, each party's role bound to its certificate.

:class:`GrpcChannel` has the interface of
:class:`~nopeek.runtime.distributed.TorchDistributedChannel` and carries the same bytes: a
message is the validated :mod:`~nopeek.runtime.wire` header (16 int64), then the tensor's bytes,
then (activations, gradients) the batch's sample ids; ``stats`` and ``error`` messages carry
UTF-8 JSON text. No pickled object crosses.

Each party serves two RPCs on its own address and calls its peers' servers:
``/nopeek.Wire/Deliver`` (one message in, empty bytes out) for the hellos and a failing party's
last words, and ``/nopeek.Wire/Stream`` (client streaming) for everything else, one long-lived
stream to each peer (:mod:`~nopeek.runtime.grpc_streams`): a send returns once its message is
queued, and a failed stream is named at the next send, receive or :meth:`GrpcChannel.close`.
Both ends authenticate with certificates signed by the job's CA
(``grpc.ssl_server_credentials(..., require_client_auth=True)``): the caller checks that the
server's certificate names the role it dials (its subject alternative name), and the server
files every incoming message under the role named in the *caller's* certificate (its common
name; read once a stream, which is one authenticated connection), never under what the message
claims. A process without a certificate for a role can therefore neither receive that role's
messages nor send as it. Messages from a peer wait in a bounded queue of their own until the
schedule asks for them; the receiver checks the header against what it expects (kind, cut,
sender, step, dtype, shape, size bound) before it builds any tensor, and gRPC's own
``max_receive_message_length`` bounds what the transport accepts.

What TLS does not hide: who talks to whom, when, and how many bytes (traffic analysis).
"""

from __future__ import annotations

import contextlib
import json
import queue
import time
from collections.abc import Callable
from concurrent import futures
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from nopeek.compress import Packed
from nopeek.errors import ChannelError, ConfigError, PeerError
from nopeek.runtime import wire
from nopeek.runtime.channel import ACTIVATION, GRADIENT, Channel, Message, WireLog, check_message
from nopeek.runtime.grpc_bytes import (
    HEADER_BYTES,
    Identity,
    check_length,
    grpc_module,
    join_parts,
    tensor_of,
)
from nopeek.runtime.grpc_streams import Ended, Failure, Inbox, Outbox, first_line

if TYPE_CHECKING:
    import grpc

    from nopeek.compress import Compressor

METHOD = "/nopeek.Wire/Deliver"
STREAM = "/nopeek.Wire/Stream"
ERROR_GRACE_S = 3.0
STOP_GRACE_S = 0.5  # how long a closing party still serves peers' streams (they end theirs)
HELLO = "hello"  # the text a party sends each peer once both can talk: proves the pair works

# (kind, cut, sender) -> (tail shape or None, flat size or None): what the topology sends there
ExpectFn = Callable[[str, str, str], tuple[tuple[int, ...] | None, int | None]]


class GrpcChannel(Channel):
    """Messages between this party (``me``) and its peers over gRPC + mutual TLS.

    ``addresses``: party -> ``host:port`` (this party listens on its own); ``identity``: its TLS
    material; ``ranks`` numbers the parties in the headers, as on torch.distributed; ``cuts``,
    ``expect``, ``max_batch``, ``timeout`` and ``codecs`` as for
    :class:`~nopeek.runtime.distributed.TorchDistributedChannel`.
    """

    def __init__(
        self,
        *,
        me: str,
        ranks: dict[str, int],
        addresses: dict[str, str],
        identity: Identity,
        cuts: list[str],
        expect: ExpectFn,
        max_batch: int,
        max_message: int,
        timeout: float,
        log: WireLog | None = None,
        codecs: dict[str, Compressor] | None = None,
    ) -> None:
        super().__init__(log)
        self.codecs = dict(codecs or {})
        self.me, self.ranks, self.addresses = me, dict(ranks), dict(addresses)
        self.cut_ids = {c: i for i, c in enumerate(cuts)}
        self.expect, self.max_batch, self.timeout = expect, max_batch, timeout
        self.max_message = max_message
        self.header_bytes = 0
        self.payload_bytes = 0
        self.text_bytes_received = (0, 0)
        self.peers = [p for p in ranks if p != me]
        self._identity = identity
        self._inbox = Inbox(self.peers)
        self._server: grpc.Server | None = None
        self._stubs: dict[str, Any] = {}
        self._outboxes: dict[str, Outbox] = {}
        self._channels: list[Any] = []
        self._failing = False  # broadcast_error was called: close delivers on a short grace

    def plan(self, cuts: list[str], expect: ExpectFn, max_message: int) -> None:
        """The schedule of a channel started before it was known (the text messages of the
        handshake and the alignment need none); refuses one whose largest message is over what
        the transport was started to accept."""
        if max_message > self.max_message:
            raise ConfigError(
                f"this run's largest message has {max_message} bytes, over the {self.max_message} "
                "the gRPC channel accepts when the parties read their own files; train with a "
                "smaller --batch-size"
            )
        self.cut_ids = {c: i for i, c in enumerate(cuts)}
        self.expect = expect

    # --- connecting ----------------------------------------------------------------------------
    def start(self) -> None:
        """Serve this party's address, dial every peer, and exchange a hello with each within
        ``timeout``: a peer that is not there, or whose certificate does not prove its role, is
        one line naming it."""
        grpc = grpc_module()
        limits = [
            ("grpc.max_receive_message_length", self.max_message),
            ("grpc.max_send_message_length", self.max_message),
        ]
        creds = grpc.ssl_server_credentials(
            [(self._identity.key, self._identity.cert)],
            root_certificates=self._identity.ca,
            require_client_auth=True,
        )
        # gRPC sets SO_REUSEPORT by default: a second process of the same role would share
        # this address (and its incoming connections) instead of failing to listen
        options = [*limits, ("grpc.so_reuseport", 0)]
        # a thread a peer's stream, for as long as it runs, and some for single calls
        pool = futures.ThreadPoolExecutor(max_workers=len(self.peers) + 4)
        server = grpc.server(pool, options=options)
        handlers = {
            "Deliver": grpc.unary_unary_rpc_method_handler(self._inbox.deliver),
            "Stream": grpc.stream_unary_rpc_method_handler(self._inbox.stream),
        }
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("nopeek.Wire", handlers)]
        )
        address = self.addresses[self.me]
        try:
            server.add_secure_port(address, creds)
        except RuntimeError:
            raise PeerError(
                f"{self.me} cannot listen on {address}: another process uses that address (is "
                f"{self.me} of this job already running?); stop it, or give {self.me} another "
                "port in every party's --peers"
            ) from None
        server.start()
        self._server = server
        client = grpc.ssl_channel_credentials(
            root_certificates=self._identity.ca,
            private_key=self._identity.key,
            certificate_chain=self._identity.cert,
        )
        for peer in self.peers:
            dial = [*limits, ("grpc.ssl_target_name_override", peer)]
            channel = grpc.secure_channel(self.addresses[peer], client, options=dial)
            self._channels.append(channel)
            self._stubs[peer] = channel.unary_unary(METHOD)
        for peer in self.peers:  # one call each, answered: proves the pair, or names the peer
            self.send_text(wire.STATS, peer, json.dumps({HELLO: self.me}))
        for peer, channel in zip(self.peers, self._channels, strict=True):
            stream = channel.stream_unary(STREAM)
            self._outboxes[peer] = Outbox(stream.future, self._wake(peer))
        for peer in self.peers:
            if self.recv_text(peer) != {HELLO: peer}:
                raise ChannelError(f"{peer} answered the hello with something else")

    def _wake(self, peer: str) -> Callable[[Failure], None]:
        """What a failed stream to ``peer`` does: wake a receive waiting on ``peer``."""

        def wake(failure: Failure) -> None:
            with contextlib.suppress(queue.Full):
                self._inbox.queues[peer].put_nowait(Ended(self._reason(peer, failure)))

        return wake

    def close(self) -> None:
        """Deliver what is queued (a peer that finished first needs none of it), then stop
        serving and hang up; a stream that failed before its messages were delivered is a
        :class:`PeerError` naming the peer (unless this party already failed and said so)."""
        deadline = time.monotonic() + (ERROR_GRACE_S if self._failing else self.timeout)
        lost = [
            self._undelivered(peer, outbox, deadline) for peer, outbox in self._outboxes.items()
        ]
        self._outboxes = {}  # closing twice closes nothing more
        for channel in self._channels:
            channel.close()
        self._channels = []
        if self._server is not None:
            self._server.stop(grace=STOP_GRACE_S).wait()
            self._server = None
        reasons = [why for why in lost if why is not None]
        if reasons and not self._failing:
            raise PeerError(reasons[0])

    def _undelivered(self, peer: str, outbox: Outbox, deadline: float) -> str | None:
        """Why what this party queued for ``peer`` may not have arrived (None: it did)."""
        failure = outbox.wait(deadline)
        if failure is None:
            return None
        # the peer stopped serving: fine once it finished, which it says by ending its own
        # stream here in order first (on another connection: give that a moment to arrive)
        self._inbox.ended[peer].wait(timeout=min(max(deadline - time.monotonic(), 0.0), 1.0))
        if peer in self._inbox.orderly:
            return None
        return self._why(peer, "delivering its last messages", failure)

    # --- sending -------------------------------------------------------------------------------
    def post(self, msg: Message) -> None:
        check_message(msg)
        self.log.record(msg)
        self._deliver(msg)

    def _deliver(self, msg: Message) -> None:
        ids = msg.ids if msg.kind in (ACTIVATION, GRADIENT) and msg.ids is not None else None
        n_ids = 0 if ids is None else len(ids)
        cut, me = self.cut_ids[msg.cut], self.ranks[self.me]
        header = wire.encode(
            msg.kind, cut, me, msg.step, msg.tensor, n_ids, "cpu", packed=msg.packed
        )
        parts = [header, msg.tensor.detach().cpu().contiguous()]
        if ids is not None:
            parts.append(ids.to(torch.int64).cpu().contiguous())
        article = "an" if msg.kind[0] in "aeiou" else "a"
        self._send(msg.receiver, parts, f"sending {article} {msg.kind} at cut {msg.cut!r}")
        self.header_bytes += HEADER_BYTES
        self.payload_bytes += msg.tensor.numel() * msg.tensor.element_size() + 8 * n_ids

    def send_text(self, kind: str, receiver: str, text: str, *, step: int = 0) -> None:
        """Send UTF-8 text (``stats`` JSON or an ``error``) to ``receiver``."""
        data = wire.text_bytes(kind, text, sender=self.me)
        header = wire.encode(kind, -1, self.ranks[self.me], step, data, 0, "cpu")
        self._send(receiver, [header, data], f"sending {kind}")
        self.header_bytes += HEADER_BYTES
        self.payload_bytes += len(data)

    def broadcast_error(self, text: str) -> None:
        """Best effort: tell every peer why this party stops (a short deadline, errors ignored).

        One call a peer, beside the stream (which may be what failed); the error may overtake
        messages still queued there, which the peer no longer needs."""
        self._failing = True
        data = wire.text_bytes(wire.ERROR, text, sender=self.me)
        header = wire.encode(wire.ERROR, -1, self.ranks[self.me], 0, data, 0, "cpu")
        blob = join_parts([header, data])
        calls = []
        for peer in self.peers:
            stub = self._stubs.get(peer)
            if stub is not None:
                with contextlib.suppress(Exception):
                    calls.append(stub.future(blob, timeout=ERROR_GRACE_S))
        for call in calls:
            with contextlib.suppress(Exception):
                call.result()

    def _send(self, peer: str, parts: list[Tensor], what: str) -> None:
        """Queue a message on the stream to ``peer`` (before there is one: a single call); a
        stream that failed, or stays full past the deadline, is a :class:`PeerError`."""
        outbox = self._outboxes.get(peer)
        if outbox is None:
            self._call(peer, join_parts(parts), what)
            return
        failure = outbox.failure()
        if failure is None and outbox.put(join_parts(parts), time.monotonic() + self.timeout):
            return
        grpc = grpc_module()
        failure = failure or outbox.failure() or Failure(grpc.StatusCode.DEADLINE_EXCEEDED, "")
        raise PeerError(self._why(peer, what, failure))

    def _call(self, peer: str, blob: bytes, what: str) -> None:
        grpc = grpc_module()
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self._stubs[peer](blob, timeout=max(deadline - time.monotonic(), 0.01))
                return
            except grpc.RpcError as exc:
                code = exc.code()
                # a peer still starting up: retry until the deadline, like a rendezvous
                if code == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline - 0.2:
                    time.sleep(0.2)
                    continue
                failure = Failure(code, first_line(exc.details()))
                raise PeerError(self._why(peer, what, failure)) from None

    def _why(self, peer: str, what: str, failure: Failure) -> str:
        return f"{self.me} gave up on {peer} {what}: {self._reason(peer, failure)}"

    def _reason(self, peer: str, failure: Failure) -> str:
        """Why a call or stream to ``peer`` failed, in words."""
        grpc = grpc_module()
        code, detail = failure.code, failure.detail
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"timed out after at most {self.timeout:g} s"
        broke = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        if peer in self._outboxes and code in broke:  # it answered the hello: it broke later
            return f"its connection closed ({detail}): it stopped or died; see its own log"
        if code == grpc.StatusCode.UNAVAILABLE:
            return (
                f"could not reach it at {self.addresses[peer]} with mutual TLS ({detail}): it is "
                "not running there, or its certificate is not the job CA's for that role"
            )
        return f"{code.name.lower()}: {detail}"

    # --- receiving -----------------------------------------------------------------------------
    def recv(
        self, *, sender: str, receiver: str, kind: str, cut: str, step: int | None = None
    ) -> Message:
        article = "an" if kind[0] in "aeiou" else "a"
        header, body = self._next(sender, f"{article} {kind} at cut {cut!r} (step {step})")
        tail, flat = self.expect(kind, cut, sender)
        codec = self.codecs.get(kind)
        want = wire.Expect(
            kind, self.cut_ids[cut], self.ranks[sender], step if step is not None else header.step,
            tail=tail, flat=flat, max_batch=self.max_batch, codec=codec.tag if codec else 0,
        )  # fmt: skip
        wire.check(header, want, sender_name=sender, cut_name=cut)
        if codec is None:
            sizes = [header.numel * header.dtype.itemsize, 8 * header.n_ids]
        else:  # a compressed message: its payload, as long as the compressor says
            sizes = [codec.nbytes(header.shape, header.dtype), 8 * header.n_ids]
        check_length(body, sum(sizes), sender)
        if codec is None:
            tensor, packed = tensor_of(body[: sizes[0]], header.dtype, header.shape), None
        else:
            tensor = tensor_of(body[: sizes[0]], torch.uint8, (sizes[0],))
            packed = Packed(codec, header.shape, header.dtype)
        ids = tensor_of(body[sizes[0] :], torch.int64, (header.n_ids,)) if header.n_ids else None
        msg = Message(kind, cut, sender, receiver, header.step, tensor, ids, packed)
        self.log.record(msg)
        return msg

    def recv_text(self, sender: str, kind: str = wire.STATS) -> Any:
        """Receive a ``stats`` message from ``sender``: parsed JSON (data only, never code)."""
        header, body = self._next(sender, f"its {kind}")
        want = wire.Expect(kind, -1, self.ranks[sender], header.step, dtypes=(torch.uint8,))
        wire.check(header, want, sender_name=sender, cut_name="-")
        check_length(body, header.numel, sender)
        got_wire, got_payload = self.text_bytes_received
        self.text_bytes_received = (got_wire + HEADER_BYTES + len(body), got_payload + len(body))
        return json.loads(bytes(body).decode(errors="replace"))

    def _next(self, sender: str, what: str) -> tuple[wire.Header, memoryview]:
        """The next message from ``sender`` as (decoded header, body bytes); a peer's error is a
        :class:`PeerError` carrying its words, and so is the end of its stream (or of this
        party's stream to it) while nothing from it is left to read."""
        box = self._inbox.queues[sender]
        try:
            item = box.get_nowait()
        except queue.Empty:
            item = self._wait(sender, box, what)
        if isinstance(item, Ended):
            raise PeerError(f"{self.me} gave up on {sender} waiting for {what}: {item.why}")
        if len(item) < HEADER_BYTES:
            raise ChannelError(f"message from {sender} is shorter than a header")
        blob = memoryview(item)
        raw = torch.frombuffer(bytearray(blob[:HEADER_BYTES]), dtype=torch.int64)
        header = wire.decode(raw, sender_name=sender)
        body = blob[HEADER_BYTES:]
        if header.kind == wire.ERROR:
            if header.dtype != torch.uint8 or len(header.shape) != 1:
                raise ChannelError(f"message from {sender}: a malformed error message")
            words = bytes(body[: wire.MAX_TEXT]).decode(errors="replace")
            raise PeerError(f"{sender} stopped: {words}")
        return header, body

    def _wait(self, sender: str, box: queue.Queue[bytes | Ended], what: str) -> bytes | Ended:
        """Wait for ``sender``'s next message until the deadline (nothing more comes once this
        party's stream to it failed)."""
        outbox = self._outboxes.get(sender)
        failure = outbox.failure() if outbox is not None else None
        if failure is not None:
            raise PeerError(self._why(sender, f"waiting for {what}", failure))
        try:
            return box.get(timeout=self.timeout)
        except queue.Empty:
            raise PeerError(
                f"{self.me} gave up on {sender} waiting for {what}: timed out after at most "
                f"{self.timeout:g} s; check that {sender} is running with the same flags (or "
                "raise --timeout)"
            ) from None


__all__ = ["GrpcChannel", "Identity"]
