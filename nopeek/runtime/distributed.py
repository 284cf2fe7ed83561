"""The distributed channel: each party its own process or host, over ``torch.distributed``.

:class:`TorchDistributedChannel` has the interface of the in-process channel. A message is a
fixed-size header (:mod:`nopeek.runtime.wire`) and then its tensor(s), sent point to point with
``torch.distributed`` (gloo on CPU, NCCL when every party has CUDA). The receiver validates the
header against what the schedule expects next before it allocates anything. Every receive (and
send) has a deadline; a peer that never sends, died or stalls becomes a one-line
:class:`~nopeek.errors.PeerError` naming the party and what this one was waiting for. A party
that fails sends its error to every peer before it exits (:meth:`broadcast_error`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from nopeek.compress import Compressor, Packed
from nopeek.errors import ChannelError, PeerError
from nopeek.runtime import wire
from nopeek.runtime.channel import ACTIVATION, GRADIENT, Channel, Message, WireLog, check_message

ERROR_GRACE_S = 3.0  # how long a failing party tries to deliver its error to each peer
DRAIN_LIMIT = 64 * 2**20  # bytes of a peer's in-flight message a failing party reads and drops
# (kind, cut, sender) -> (tail shape or None, flat size or None): what the topology sends there
ExpectFn = Callable[[str, str, str], tuple[tuple[int, ...] | None, int | None]]


def _left(deadline: float) -> datetime.timedelta:
    """The time until ``deadline`` (at least 10 ms: a zero timeout means none to gloo)."""
    return datetime.timedelta(seconds=max(deadline - time.monotonic(), 0.01))


def _body(
    header: wire.Header, codecs: dict[int, Compressor] | None = None
) -> list[tuple[tuple[int, ...], torch.dtype]] | None:
    """The parts that follow ``header`` on the wire: its tensor (a compressed message: its
    payload, by ``codecs``: tag -> compressor), then its ids if any; None for an unknown tag."""
    parts = [(header.shape, header.dtype)]
    if header.codec:
        codec = (codecs or {}).get(header.codec)
        if codec is None:
            return None
        parts = [((codec.nbytes(header.shape, header.dtype),), torch.uint8)]
    if header.n_ids:
        parts.append(((header.n_ids,), torch.int64))
    return parts


def _wait_for(work: dist.Work | None, timeout: datetime.timedelta) -> None:
    """Wait for a started send or receive (torch starts none only on a rank outside the
    group, which no party is)."""
    assert work is not None
    work.wait(timeout=timeout)


def _fits(body: list[tuple[tuple[int, ...], torch.dtype]]) -> bool:
    return sum(math.prod(shape) * dtype.itemsize for shape, dtype in body) <= DRAIN_LIMIT


class TorchDistributedChannel(Channel):
    """Messages between this party (``me``) and its peers, by rank (``ranks``: party -> rank).

    ``cuts`` numbers the cut names (every party has the same list); ``expect`` says the shape
    each (kind, cut, sender) carries; ``max_batch`` bounds the batch of activations and
    gradients; ``timeout`` is every receive's deadline in seconds; ``codecs`` (message kind ->
    :class:`~nopeek.compress.Compressor`, from the run's ``--compress``) decode what arrives
    compressed.
    """

    def __init__(
        self,
        *,
        me: str,
        ranks: dict[str, int],
        cuts: list[str],
        expect: ExpectFn,
        max_batch: int,
        timeout: float,
        device: torch.device | None = None,
        log: WireLog | None = None,
        codecs: dict[str, Compressor] | None = None,
    ) -> None:
        super().__init__(log)
        self.codecs = dict(codecs or {})
        self._by_tag = {c.tag: c for c in self.codecs.values()}
        self.me, self.ranks = me, dict(ranks)
        self.names = {r: p for p, r in self.ranks.items()}
        self.cut_ids = {c: i for i, c in enumerate(cuts)}
        self.expect, self.max_batch, self.timeout = expect, max_batch, timeout
        self.device = device or torch.device("cpu")
        self.header_bytes = 0
        self.payload_bytes = 0
        self.text_bytes_received = (0, 0)  # (wire, payload) of the stats texts received
        # per peer: the parts of a message whose header was read but not its body (None: a
        # header that did not decode); what broadcast_error must read first to drain it
        self._unread: dict[str, list[tuple[tuple[int, ...], torch.dtype]] | None] = {}

    def plan(self, cuts: list[str], expect: ExpectFn) -> None:
        """The schedule of a channel opened before it was known (the text messages of the
        handshake and the alignment need none): the cuts and what each carries."""
        self.cut_ids = {c: i for i, c in enumerate(cuts)}
        self.expect = expect

    # --- sending -------------------------------------------------------------------------------
    def post(self, msg: Message) -> None:
        check_message(msg)
        self.log.record(msg)
        self._deliver(msg)

    def _deliver(self, msg: Message) -> None:
        dst = self.ranks[msg.receiver]
        ids = msg.ids if msg.kind in (ACTIVATION, GRADIENT) and msg.ids is not None else None
        n_ids = 0 if ids is None else len(ids)
        cut = self.cut_ids[msg.cut]
        me = self.ranks[self.me]
        header = wire.encode(
            msg.kind, cut, me, msg.step, msg.tensor, n_ids, self.device, packed=msg.packed
        )
        article = "an" if msg.kind[0] in "aeiou" else "a"
        what = f"sending {article} {msg.kind} at cut {msg.cut!r} (step {msg.step})"
        parts = [header, msg.tensor.detach().contiguous().to(self.device)]
        if ids is not None:
            parts.append(ids.to(torch.int64).to(self.device))
        self._send(parts, dst, what)
        self.header_bytes += wire.HEADER_LEN * 8
        self.payload_bytes += msg.tensor.numel() * msg.tensor.element_size() + 8 * n_ids

    def send_text(self, kind: str, receiver: str, text: str, *, step: int = 0) -> None:
        """Send UTF-8 text (``stats`` JSON or an ``error``) to ``receiver``."""
        data = wire.text_bytes(kind, text, sender=self.me)
        dst = self.ranks[receiver]
        header = wire.encode(kind, -1, self.ranks[self.me], step, data, 0, self.device)
        self._send([header, data.to(self.device)], dst, f"sending {kind}")
        self.header_bytes += wire.HEADER_LEN * 8
        self.payload_bytes += len(data)

    def broadcast_error(self, text: str) -> None:
        """Best effort: tell every peer why this party stops (a short grace, errors ignored).

        The error is posted to every peer at once, under one deadline: gloo closes *every* pair
        of a process when one wait times out, so no wait may end before all peers had the whole
        grace. A peer may itself be blocked sending to this party (a gloo send completes only
        when received) and would never read the error; so on the CPU a thread per peer reads
        and drops what that peer sends meanwhile (the rest of a message whose header this party
        already read first; at most :data:`DRAIN_LIMIT` bytes a message), which frees the peer
        to read the error next. NCCL allows no second thread on a communicator: there the
        error is only posted.
        """
        data = wire.text_bytes(wire.ERROR, text, sender=self.me)
        deadline = time.monotonic() + ERROR_GRACE_S
        peers = [p for p in self.ranks if p != self.me]
        posted: dict[str, list[tuple[Tensor, dist.Work | None]]] = {}
        for peer in peers:
            header = wire.encode(wire.ERROR, -1, self.ranks[self.me], 0, data, 0, self.device)
            with contextlib.suppress(RuntimeError):
                parts = [header, data.to(self.device)]
                posted[peer] = [(t, dist.isend(t, dst=self.ranks[peer])) for t in parts]
        drains = []
        if self.device.type == "cpu":
            for peer in peers:
                drains.append(threading.Thread(target=self._drain, args=(peer, deadline)))
                drains[-1].daemon = True
                drains[-1].start()
        for works in posted.values():
            with contextlib.suppress(RuntimeError):
                for _, work in works:
                    _wait_for(work, _left(deadline))
                self.header_bytes += wire.HEADER_LEN * 8
                self.payload_bytes += len(data)
        for drain in drains:
            drain.join(timeout=_left(deadline).total_seconds() + 1.0)

    def _drain(self, peer: str, deadline: float) -> None:
        """Read and drop ``peer``'s messages until it closes the pair or ``deadline`` passes."""
        rank = self.ranks[peer]

        def receive(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
            t = torch.empty(shape, dtype=dtype, device=self.device)
            _wait_for(dist.irecv(t, src=rank), _left(deadline))
            return t

        body = self._unread.pop(peer, [])
        # best effort on the way out: whatever goes wrong here ends the draining, quietly
        with contextlib.suppress(Exception):
            while body is not None and _fits(body) and time.monotonic() < deadline:
                for shape, dtype in body:
                    receive(shape, dtype)
                raw = receive((wire.HEADER_LEN,), torch.int64)
                body = _body(wire.decode(raw, sender_name=peer), self._by_tag)

    def _send(self, parts: list[Tensor], dst: int, what: str) -> None:
        """Post a message's parts together (header first: pairs deliver in order), then wait:
        one rendezvous a message instead of one a part. The receiver still reads the header
        alone and checks it before it allocates the rest."""
        self._wait([partial(dist.isend, t, dst=dst) for t in parts], self.names[dst], what)

    # --- receiving -----------------------------------------------------------------------------
    def recv(
        self, *, sender: str, receiver: str, kind: str, cut: str, step: int | None = None
    ) -> Message:
        article = "an" if kind[0] in "aeiou" else "a"
        header = self._header(sender, f"{article} {kind} at cut {cut!r} (step {step})")
        tail, flat = self.expect(kind, cut, sender)
        codec = self.codecs.get(kind)
        want = wire.Expect(
            kind, self.cut_ids[cut], self.ranks[sender], step if step is not None else header.step,
            tail=tail, flat=flat, max_batch=self.max_batch, codec=codec.tag if codec else 0,
        )  # fmt: skip
        wire.check(header, want, sender_name=sender, cut_name=cut)
        body = _body(header, self._by_tag)
        assert body is not None  # wire.check accepted the codec tag
        (shape, dtype), *_ = body
        tensor = torch.empty(shape, dtype=dtype, device=self.device)
        parts, ids = [tensor], None
        if header.n_ids:
            ids = torch.empty(header.n_ids, dtype=torch.int64, device=self.device)
            parts.append(ids)
        self._recv(parts, sender, f"the {kind} at cut {cut!r}")
        self._unread.pop(sender, None)
        ids = ids.cpu() if ids is not None else None
        packed = Packed(codec, header.shape, header.dtype) if codec else None
        msg = Message(kind, cut, sender, receiver, header.step, tensor, ids, packed)
        self.log.record(msg)
        return msg

    def recv_text(self, sender: str, kind: str = wire.STATS) -> Any:
        """Receive a ``stats`` message from ``sender``: parsed JSON (data only, never code)."""
        header = self._header(sender, f"its {kind}")
        want = wire.Expect(kind, -1, self.ranks[sender], header.step, dtypes=(torch.uint8,))
        wire.check(header, want, sender_name=sender, cut_name="-")
        text = self._text(header, sender)
        got_wire, got_payload = self.text_bytes_received
        self.text_bytes_received = (
            got_wire + wire.HEADER_LEN * 8 + header.numel,
            got_payload + header.numel,
        )
        return json.loads(text)

    def _header(self, sender: str, what: str) -> wire.Header:
        raw = torch.empty(wire.HEADER_LEN, dtype=torch.int64, device=self.device)
        self._recv([raw], sender, what)
        self._unread[sender] = None  # a body of unknown size, until the header decodes
        header = wire.decode(raw, sender_name=sender)
        self._unread[sender] = _body(header, self._by_tag)
        if header.kind == wire.ERROR:
            if (
                header.dtype != torch.uint8
                or len(header.shape) != 1
                or header.numel > wire.MAX_TEXT
            ):
                raise ChannelError(f"message from {sender}: a malformed error message")
            raise PeerError(f"{sender} stopped: {self._text(header, sender)}")
        return header

    def _text(self, header: wire.Header, sender: str) -> str:
        data = torch.empty(header.shape, dtype=torch.uint8, device=self.device)
        self._recv([data], sender, "a text message")
        self._unread.pop(sender, None)
        return bytes(data.cpu().tolist()).decode(errors="replace")

    def _recv(self, parts: list[Tensor], sender: str, what: str) -> None:
        src = self.ranks[sender]
        starts = [partial(dist.irecv, t, src=src) for t in parts]
        self._wait(starts, sender, f"waiting for {what}")

    def _wait(self, starts: Sequence[Callable[[], dist.Work | None]], peer: str, what: str) -> None:
        """Start operations together and wait for each until the deadline; a closed or
        timed-out pair (gloo raises at the start or at the wait) becomes a one-line
        :class:`PeerError`."""
        try:
            works = [start() for start in starts]
            for work in works:
                _wait_for(work, datetime.timedelta(seconds=self.timeout))
        except RuntimeError as exc:
            text = str(exc).lower()  # gloo: "Timed out waiting 2000ms for recv operation"
            timed_out = "timed out" in text or "timeout" in text
            reason = "timed out" if timed_out else "its connection closed"
            raise PeerError(
                f"{self.me} gave up on {peer} (rank {self.ranks[peer]}) {what}: {reason} after "
                f"at most {self.timeout:g} s; check that {peer} is running with the same flags "
                "(or raise --timeout)"
            ) from None
