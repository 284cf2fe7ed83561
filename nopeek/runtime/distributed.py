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
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from nopeek.channel import ACTIVATION, GRADIENT, Channel, Message, WireLog, check_message
from nopeek.errors import ChannelError, PeerError
from nopeek.runtime import wire

# (kind, cut, sender) -> (tail shape or None, flat size or None): what the topology sends there
ExpectFn = Callable[[str, str, str], tuple[tuple[int, ...] | None, int | None]]


class TorchDistributedChannel(Channel):
    """Messages between this party (``me``) and its peers, by rank (``ranks``: party -> rank).

    ``cuts`` numbers the cut names (every party has the same list); ``expect`` says the shape
    each (kind, cut, sender) carries; ``max_batch`` bounds the batch of activations and
    gradients; ``timeout`` is every receive's deadline in seconds.
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
    ) -> None:
        super().__init__(log)
        self.me, self.ranks = me, dict(ranks)
        self.names = {r: p for p, r in self.ranks.items()}
        self.cut_ids = {c: i for i, c in enumerate(cuts)}
        self.expect, self.max_batch, self.timeout = expect, max_batch, timeout
        self.device = device or torch.device("cpu")
        self.header_bytes = 0
        self.payload_bytes = 0
        self.text_bytes_received = (0, 0)  # (wire, payload) of the stats texts received

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
        header = wire.encode(
            msg.kind, cut, self.ranks[self.me], msg.step, msg.tensor, n_ids, self.device
        )
        article = "an" if msg.kind[0] in "aeiou" else "a"
        what = f"sending {article} {msg.kind} at cut {msg.cut!r} (step {msg.step})"
        self._send(header, dst, what)
        self._send(msg.tensor.detach().contiguous().to(self.device), dst, what)
        if ids is not None:
            self._send(ids.to(torch.int64).to(self.device), dst, what)
        self.header_bytes += wire.HEADER_LEN * 8
        self.payload_bytes += msg.tensor.numel() * msg.tensor.element_size() + 8 * n_ids

    def send_text(self, kind: str, receiver: str, text: str, *, step: int = 0) -> None:
        """Send UTF-8 text (``stats`` JSON or an ``error``) to ``receiver``."""
        raw = text.encode()
        if kind == wire.ERROR:
            raw = raw[: wire.MAX_TEXT]
        elif len(raw) > wire.MAX_TEXT:
            raise ChannelError(
                f"{self.me}'s {kind} message has {len(raw)} bytes, over the {wire.MAX_TEXT} a "
                "receiver accepts; train with fewer steps per epoch (a larger --batch-size)"
            )
        data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        dst = self.ranks[receiver]
        header = wire.encode(kind, -1, self.ranks[self.me], step, data, 0, self.device)
        self._send(header, dst, f"sending {kind}")
        self._send(data.to(self.device), dst, f"sending {kind}")
        self.header_bytes += wire.HEADER_LEN * 8
        self.payload_bytes += len(data)

    def broadcast_error(self, text: str) -> None:
        """Best effort: tell every peer why this party stops (short deadline, errors ignored)."""
        timeout, self.timeout = self.timeout, min(self.timeout, 3.0)
        try:
            for peer in self.ranks:
                if peer != self.me:
                    with contextlib.suppress(PeerError, RuntimeError):
                        self.send_text(wire.ERROR, peer, text)
        finally:
            self.timeout = timeout

    def _send(self, tensor: Tensor, dst: int, what: str) -> None:
        self._wait(lambda: dist.isend(tensor, dst=dst), self.names[dst], what)

    # --- receiving -----------------------------------------------------------------------------
    def recv(
        self, *, sender: str, receiver: str, kind: str, cut: str, step: int | None = None
    ) -> Message:
        article = "an" if kind[0] in "aeiou" else "a"
        header = self._header(sender, f"{article} {kind} at cut {cut!r} (step {step})")
        tail, flat = self.expect(kind, cut, sender)
        want = wire.Expect(
            kind, self.cut_ids[cut], self.ranks[sender], step if step is not None else header.step,
            tail=tail, flat=flat, max_batch=self.max_batch,
        )  # fmt: skip
        wire.check(header, want, sender_name=sender, cut_name=cut)
        tensor = torch.empty(header.shape, dtype=header.dtype, device=self.device)
        self._recv(tensor, sender, f"the {kind} at cut {cut!r}")
        ids = None
        if header.n_ids:
            ids = torch.empty(header.n_ids, dtype=torch.int64, device=self.device)
            self._recv(ids, sender, f"the sample ids of the {kind} at cut {cut!r}")
            ids = ids.cpu()
        msg = Message(kind, cut, sender, receiver, header.step, tensor, ids)
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
        self._recv(raw, sender, what)
        header = wire.decode(raw, sender_name=sender)
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
        self._recv(data, sender, "a text message")
        return bytes(data.cpu().tolist()).decode(errors="replace")

    def _recv(self, tensor: Tensor, sender: str, what: str) -> None:
        src = self.ranks[sender]
        self._wait(lambda: dist.irecv(tensor, src=src), sender, f"waiting for {what}")

    def _wait(self, start, peer: str, what: str) -> None:
        """Start an operation and wait for it until the deadline; a closed or timed-out pair
        (gloo raises at the start or at the wait) becomes a one-line :class:`PeerError`."""
        try:
            start().wait(timeout=datetime.timedelta(seconds=self.timeout))
        except RuntimeError as exc:
            text = str(exc).lower()  # gloo: "Timed out waiting 2000ms for recv operation"
            timed_out = "timed out" in text or "timeout" in text
            reason = "timed out" if timed_out else "its connection closed"
            raise PeerError(
                f"{self.me} gave up on {peer} (rank {self.ranks[peer]}) {what}: {reason} after "
                f"at most {self.timeout:g} s; check that {peer} is running with the same flags "
                "(or raise --timeout)"
            ) from None
