"""What the gRPC transport needs around its bytes: this party's TLS material, a message as
bytes (the validated :mod:`~nopeek.runtime.wire` header, the tensor's bytes, the sample ids) and
back, and the largest message a schedule can send (what gRPC is told to accept).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from nopeek.errors import ChannelError, ConfigError
from nopeek.runtime import wire

HEADER_BYTES = wire.HEADER_LEN * 8


def grpc_module() -> ModuleType:
    """The grpc module (grpcio is optional: the deploy extra); without it, one line naming the
    extra."""
    # gRPC's core logs failed TLS handshakes to fd 2 on its own threads; the one-line error
    # this channel raises says it (with -v, nopeek's logging shows more)
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    try:
        import grpc
    except ModuleNotFoundError:
        raise ConfigError(
            "the gRPC transport needs grpcio; install it with pip install 'nopeek[deploy]'"
        ) from None
    return grpc


@dataclass(frozen=True)
class Identity:
    """This party's TLS material: the job's CA certificate, its own certificate and key (PEM)."""

    ca: bytes
    cert: bytes
    key: bytes

    @classmethod
    def read(cls, ca: str | Path, cert: str | Path, key: str | Path) -> Identity:
        """Read the three PEM files; a missing or unreadable one is one line naming it."""
        parts = []
        for what, path in (("--ca", ca), ("--cert", cert), ("--key", key)):
            try:
                parts.append(Path(path).read_bytes())
            except OSError as exc:
                raise ConfigError(
                    f"cannot read {what} {path} ({exc.strerror}); make certificates with "
                    "`nopeek certs` or pass your own PKI's PEM files"
                ) from None
        return cls(*parts)

    def role(self) -> str:
        """The role this certificate names (its subject's common name)."""
        from nopeek.runtime.certs import common_name

        return common_name(self.cert)


def join_parts(parts: list[Tensor]) -> bytes:
    """The parts' bytes, one after the other (one copy)."""
    return b"".join(t.contiguous().view(torch.uint8).numpy().data for t in parts)


def check_length(body: bytes | memoryview, want: int, sender: str) -> None:
    if len(body) != want:
        raise ChannelError(
            f"message from {sender}: its body has {len(body)} bytes, its header announces {want}"
        )


def tensor_of(raw: memoryview, dtype: torch.dtype, shape: tuple[int, ...]) -> Tensor:
    """A tensor of its own (writable) over a copy of ``raw``."""
    if not raw:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(raw), dtype=dtype).reshape(shape)


def max_message_bytes(max_batch: int, tails: list[int], flats: list[int]) -> int:
    """The largest message the schedule can send: a header, the biggest activation, gradient or
    weights vector (float64 at most) with its ids, or a text; gRPC refuses anything larger.

    >>> max_message_bytes(64, [128], [1000]) >= 16 * 8 + 64 * 128 * 8 + 64 * 8
    True
    """
    batch = max(max_batch * (t * 8 + 8) for t in tails) if tails else 0
    flat = max(flats) * 8 if flats else 0
    return HEADER_BYTES + max(batch, flat, wire.MAX_TEXT) + 1024
