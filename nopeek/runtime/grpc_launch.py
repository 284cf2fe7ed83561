"""Joining a run between institutions: gRPC with mutual TLS (see :mod:`.grpc_channel`).

A :class:`GrpcLaunch` names where every party listens (``addresses``: party -> ``host:port``) and
this party's TLS material (the job CA's certificate, its own certificate and key). The party a
process runs is the role its certificate names, not a flag: a process can only take a role the
job's CA certified it for. :func:`nopeek.training.trainer.train` with
``launch=GrpcLaunch(...)`` runs that party exactly as over torch.distributed (same schedule, same
headers, same numbers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from nopeek.errors import ConfigError
from nopeek.runtime import wire
from nopeek.runtime.channel import WireLog
from nopeek.runtime.grpc_bytes import Identity, grpc_module, max_message_bytes
from nopeek.runtime.grpc_channel import GrpcChannel
from nopeek.runtime.launch import (
    DEFAULT_TIMEOUT,
    Parties,
    Schedule,
    planned,
    schedule,
    unplanned,
)
from nopeek.topology import Topology

if TYPE_CHECKING:
    from nopeek.compress import Compressor


def parse_peers(text: str) -> dict[str, str]:
    """``client=10.0.0.4:7000,server=10.0.0.5:7000`` -> {party: address}.

    >>> parse_peers("client=127.0.0.1:7001,server=127.0.0.1:7002")
    {'client': '127.0.0.1:7001', 'server': '127.0.0.1:7002'}
    """
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        party, sep, address = item.partition("=")
        host, colon, port = address.rpartition(":")
        if not sep or not colon or not host or not port.isdigit():
            raise ConfigError(
                f"--peers entry {item!r} is not party=host:port; pass e.g. "
                "client=10.0.0.4:7000,server=10.0.0.5:7000"
            )
        out[party] = address
    return out


@dataclass(frozen=True)
class GrpcLaunch:
    """This process's place in a gRPC run: every party's address and its own TLS identity."""

    addresses: dict[str, str]
    identity: Identity
    timeout: float = DEFAULT_TIMEOUT
    secret: bytes | None = None  # optional on top of the certificates (handshake.prove)

    def __post_init__(self) -> None:
        grpc_module()  # without grpcio: one line naming the extra, before any data set is loaded

    def party(self, topology: Parties) -> str:
        """The role this process's certificate names; refuses one the topology has not, or
        addresses that do not cover every party."""
        me = self.identity.role()
        parties = topology.parties
        if me not in parties:
            raise ConfigError(
                f"--cert names role {me!r}, which --topology {topology.name} does not have "
                f"({', '.join(parties)}); use the certificate made for this party's role"
            )
        missing = [p for p in parties if p not in self.addresses]
        extra = [p for p in self.addresses if p not in parties]
        if missing or extra:
            raise ConfigError(
                f"--peers must give an address for each party ({', '.join(parties)}); "
                + (f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(extra)}")
            )
        if not self.timeout > 0:
            raise ConfigError(f"--timeout must be > 0 seconds, got {self.timeout}")
        return me

    def join(self, me: str, device: torch.device, peers: list[str] | None = None) -> None:
        """Nothing to meet first: the channel dials its peers when it starts."""
        if device.type != "cpu":
            raise ConfigError("the gRPC transport carries CPU tensors; train with --device cpu")

    def channel(
        self,
        topology: Topology,
        me: str,
        *,
        x: torch.Tensor,
        max_batch: int,
        device: torch.device,
        codecs: dict[str, Compressor] | None = None,
    ) -> Callable[[WireLog | None], GrpcChannel]:
        """``wire_log -> GrpcChannel`` for party ``me``, started (peers dialled, hellos
        exchanged) before it is returned; ``codecs`` decode compressed messages."""
        return planned(self, me, schedule(topology, x), max_batch=max_batch, device=device,
                       codecs=codecs)  # fmt: skip

    def open(
        self,
        me: str,
        parties: list[str],
        *,
        max_batch: int,
        device: torch.device,
        plan: Schedule | None = None,
        codecs: dict[str, Compressor] | None = None,
        log: WireLog | None = None,
    ) -> GrpcChannel:
        """Party ``me``'s channel, started (peers dialled, hellos exchanged): scheduled by
        ``plan`` (a :class:`~nopeek.runtime.launch.Schedule`), or carrying only text messages
        (the handshake, the alignment; gRPC then accepts messages up to a text's bound) until
        :meth:`schedule` gives it one."""
        channel = GrpcChannel(
            me=me,
            ranks={p: i for i, p in enumerate(parties)},
            addresses=self.addresses,
            identity=self.identity,
            cuts=plan.cuts if plan is not None else [],
            expect=plan.expect if plan is not None else unplanned,
            max_batch=max_batch,
            max_message=_limit(plan, max_batch, codecs),
            timeout=self.timeout,
            log=log,
            codecs=codecs,
        )
        return _started(channel)

    def schedule(self, channel: GrpcChannel, plan: Schedule, *, max_batch: int) -> None:
        """Give a channel opened without a plan the run's schedule."""
        channel.plan(plan.cuts, plan.expect, _limit(plan, max_batch, channel.codecs))

    def close(self, channel: GrpcChannel | None) -> None:
        """Stop this party's server and hang up."""
        if channel is not None:
            channel.close()


def _started(channel: GrpcChannel) -> GrpcChannel:
    """``channel``, started (peers dialled, hellos exchanged); closed again if that fails, so no
    server thread outlives a party that could not meet its peers."""
    try:
        channel.start()
    except BaseException:
        channel.close()
        raise
    return channel


def _limit(
    plan: Schedule | None, max_batch: int, codecs: dict[str, Compressor] | None = None
) -> int:
    """The largest message ``plan`` sends (a text's bound without a plan), compressed payloads
    included: one may outgrow the float64 dense size (top-k near 1 carries indices too)."""
    if plan is None:
        return max_message_bytes(max_batch, [], [])
    tails = [int(torch.Size(t).numel()) for t in plan.tails.values()]
    limit = max_message_bytes(max_batch, tails, list(plan.sizes.values()))
    for codec in (codecs or {}).values():
        widest = max((codec.nbytes((max_batch, t), torch.float64) for t in tails), default=0)
        limit = max(limit, wire.HEADER_LEN * 8 + widest + 8 * max_batch + 1024)
    return limit
