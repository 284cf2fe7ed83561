"""Joining a distributed run: which party this process is, the process group, the channel.

A :class:`PartyLaunch` names this process (``rank`` of ``world_size``, optionally its ``role``)
and where the parties meet (``master_addr:master_port``). :func:`nopeek.training.trainer.train` with
``launch=`` runs only this party, over a
:class:`~nopeek.runtime.distributed.TorchDistributedChannel`: rank r runs the topology's r-th
party (``topology.parties``: vanilla ``client, server``; vertical ``client0, client1, server``;
many-clients ``client0, client1, server``; ...).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import torch
import torch.distributed as dist
from torch import nn

from nopeek.errors import ChannelError, ConfigError, NopeekError, PeerError
from nopeek.runtime.channel import WEIGHTS, WireLog
from nopeek.runtime.distributed import TorchDistributedChannel
from nopeek.runtime.rendezvous import check_gloo_transport, claim_rank, meeting_store, quiet_stderr
from nopeek.runtime.segments import flatten_state
from nopeek.topology import Topology
from nopeek.topology.crossings import dry_run

if TYPE_CHECKING:
    from nopeek.compress import Compressor
    from nopeek.runtime.grpc_channel import GrpcChannel

DEFAULT_TIMEOUT = 300.0


class Parties(Protocol):
    """A topology, or a roster of one before it is built: its name and parties in rank order."""

    @property
    def name(self) -> str: ...

    @property
    def parties(self) -> list[str]: ...


class Launch(Protocol):
    """How this process joins a distributed run: :class:`PartyLaunch` (torch.distributed) or
    :class:`~nopeek.runtime.grpc_launch.GrpcLaunch` (gRPC with mutual TLS)."""

    @property
    def timeout(self) -> float: ...

    @property
    def secret(self) -> bytes | None: ...

    def party(self, topology: Parties) -> str: ...

    def join(self, me: str, device: torch.device, peers: list[str] | None = None) -> None: ...

    def channel(
        self,
        topology: Topology,
        me: str,
        *,
        x: torch.Tensor,
        max_batch: int,
        device: torch.device,
        codecs: dict[str, Compressor] | None = None,
    ) -> Callable[[WireLog | None], TorchDistributedChannel | GrpcChannel]: ...

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
    ) -> TorchDistributedChannel | GrpcChannel: ...

    def schedule(self, channel: Any, plan: Schedule, *, max_batch: int) -> None: ...

    def close(self, channel: Any) -> None: ...


@dataclass(frozen=True)
class PartyLaunch:
    """This process's place in a distributed run. ``role``: ``server`` or ``client:<i>``."""

    rank: int
    world_size: int
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    timeout: float = DEFAULT_TIMEOUT
    role: str | None = None
    secret: bytes | None = None  # the job secret every party proves (handshake.prove)

    @classmethod
    def from_env(
        cls,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        role: str | None = None,
        secret: bytes | None = None,
    ) -> PartyLaunch:
        """From the variables ``torchrun`` sets (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)."""
        try:
            return cls(
                int(os.environ["RANK"]),
                int(os.environ["WORLD_SIZE"]),
                os.environ.get("MASTER_ADDR", "127.0.0.1"),
                int(os.environ.get("MASTER_PORT", "29500")),
                timeout,
                role,
                secret,
            )
        except (KeyError, ValueError) as exc:
            raise ConfigError(
                f"RANK and WORLD_SIZE must be set ({exc}); launch with torchrun or use "
                "`nopeek party --rank R --world-size W`"
            ) from None

    def party(self, topology: Parties) -> str:
        """The party this process runs; refuses a world size or role that does not fit."""
        parties = topology.parties
        if self.world_size != len(parties):
            raise ConfigError(
                f"--topology {topology.name} has {len(parties)} parties ({', '.join(parties)}); "
                f"start {len(parties)} processes (--world-size {len(parties)}), not "
                f"{self.world_size}"
            )
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"--rank must be in 0..{self.world_size - 1}, got {self.rank}")
        if not self.timeout > 0:
            raise ConfigError(f"--timeout must be > 0 seconds, got {self.timeout}")
        me = parties[self.rank]
        if self.role is not None and _role_party(self.role, parties) != me:
            raise ConfigError(
                f"rank {self.rank} runs {me} in this topology, not --role {self.role}; ranks "
                f"follow the parties' order: {', '.join(f'{i}={p}' for i, p in enumerate(parties))}"
            )
        return me

    def channel(
        self,
        topology: Topology,
        me: str,
        *,
        x: torch.Tensor,
        max_batch: int,
        device: torch.device,
        codecs: dict[str, Compressor] | None = None,
    ) -> Callable[[WireLog | None], TorchDistributedChannel]:
        """``wire_log -> TorchDistributedChannel`` for party ``me``, knowing what every message at
        every cut should look like (:func:`schedule`) and how compressed ones decode (``codecs``:
        message kind -> compressor, :func:`nopeek.compress.by_kind`)."""
        plan = schedule(topology, x)
        return planned(self, me, plan, max_batch=max_batch, device=device, codecs=codecs)

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
    ) -> TorchDistributedChannel:
        """Party ``me``'s channel, once :meth:`join` ed: scheduled by ``plan``
        (:class:`Schedule`), or carrying only text messages (the handshake, the alignment) until
        :meth:`schedule` gives it one; ``codecs`` as for :meth:`channel`; it records into
        ``log``."""
        return TorchDistributedChannel(
            me=me,
            ranks={p: i for i, p in enumerate(parties)},
            cuts=plan.cuts if plan is not None else [],
            expect=plan.expect if plan is not None else unplanned,
            max_batch=max_batch,
            timeout=self.timeout,
            device=device,
            log=log,
            codecs=codecs,
        )

    def schedule(self, channel: TorchDistributedChannel, plan: Schedule, *, max_batch: int) -> None:
        """Give a channel opened without a plan the run's :class:`Schedule`."""
        channel.plan(plan.cuts, plan.expect)

    def close(self, channel: TorchDistributedChannel) -> None:
        """Leave the process group (``channel`` is unused: the group is the transport)."""
        dist.destroy_process_group()

    def join(self, me: str, device: torch.device, peers: list[str] | None = None) -> None:
        """Meet the other parties (gloo, or NCCL when this party trains on CUDA).

        The meeting point is rank 0's store (:func:`torch.distributed.rendezvous`, as
        ``init_method="tcp://..."`` uses it); before the group forms, each process claims its
        rank there, so a second process started with a rank already taken is refused in one
        line instead of waiting out ``timeout`` on a group that will never form.
        """
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "gloo":
            check_gloo_transport()
        where = f"{self.master_addr}:{self.master_port}"
        try:
            with quiet_stderr():  # c10d logs every retry with C++ stack frames to fd 2
                store = meeting_store(where, self.rank, self.world_size, self.timeout)
        except (RuntimeError, ValueError, TimeoutError) as exc:
            raise self._unmet(me, peers, exc) from None
        claim_rank(store, self.rank, where)
        try:
            with quiet_stderr():
                dist.init_process_group(
                    backend,
                    store=dist.PrefixStore("default_pg", store),  # as init_method= would
                    rank=self.rank,
                    world_size=self.world_size,
                    timeout=datetime.timedelta(seconds=self.timeout),
                )
        except (RuntimeError, ValueError, TimeoutError) as exc:
            raise self._unmet(me, peers, exc) from None

    def _unmet(self, me: str, peers: list[str] | None, exc: Exception) -> NopeekError:
        """The one line for a failed join; a port rank 0 cannot bind is named as such."""
        where = f"{self.master_addr}:{self.master_port}"
        if "EADDRINUSE" in str(exc) or "address already in use" in str(exc).lower():
            return ConfigError(
                f"rank 0 cannot host the meeting point {where}: the port is in use (rank 0 of "
                "this run is already taken, or another program listens there); stop it, or "
                "start every party with another --master-port"
            )
        return PeerError(
            f"{me} could not meet {', '.join(peers or ['the other parties'])} at "
            f"{where} within {self.timeout:g} s ({type(exc).__name__}); start every party with "
            "the same --master-addr, --master-port and --world-size, and open that port"
        )


def _role_party(role: str, parties: list[str]) -> str:
    if role == "server":
        return "server"
    kind, _, index = role.partition(":")
    if kind != "client" or not index.isdigit():
        raise ConfigError(f"--role must be server or client:<i>, got {role!r}")
    clients = [p for p in parties if p.startswith("client")]
    if clients == ["client"] and index == "0":
        return "client"
    name = f"client{index}"
    if name not in parties:
        raise ConfigError(f"--role {role}: this topology's clients are {', '.join(clients)}")
    return name


def cut_shapes(topology: Topology, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Each node's output shape apart from the batch, from a dry run of the initial segments
    on two samples (:func:`~nopeek.topology.crossings.dry_run`)."""
    outs = dry_run(topology, x)
    return {n: tuple(t.shape[1:]) for n, t in outs.items() if isinstance(t, torch.Tensor)}


@dataclass(frozen=True)
class Schedule:
    """What every message of a run looks like, known to every party before the first one:
    ``ranks`` (party -> index in headers), ``cuts`` (numbered in headers), and ``expect(kind,
    cut, sender)``: the shape apart from the batch (activations, gradients) or the flat size
    (weights)."""

    ranks: dict[str, int]
    cuts: list[str]
    tails: dict[tuple[str, str], tuple[int, ...]]
    sizes: dict[str, int]

    def expect(self, kind: str, cut: str, sender: str) -> tuple[tuple[int, ...] | None, int | None]:
        if kind == WEIGHTS:
            return None, self.sizes[cut]
        return self.tails[(cut, sender)], None


def unplanned(kind: str, cut: str, sender: str) -> NoReturn:
    """The ``expect`` of a channel whose schedule is not known yet: no tensor may come."""
    raise ChannelError(
        f"{sender} sent a {kind} at cut {cut!r} before the parties agreed on the run; start "
        "every party with the same flags"
    )


def schedule(topology: Topology, x: torch.Tensor) -> Schedule:
    """The :class:`Schedule` of ``topology`` (shapes from :func:`cut_shapes` on two samples of
    ``x``, weights sizes from the architecture)."""
    shapes = cut_shapes(topology, x[:2])
    tails: dict[tuple[str, str], tuple[int, ...]] = {}
    for edge in topology.edges():
        tails.setdefault((edge.cut, edge.sender), shapes[edge.src])
        tails.setdefault((edge.cut, edge.receiver), shapes[edge.src])
    sizes: dict[str, int] = {}
    for node in topology.nodes:
        if node.cut is not None and (node.module is not None or node.name in topology.factories):
            module: nn.Module = node.module or topology.factories[node.name]()
            sizes.setdefault(topology.cut_of(node.name), flatten_state(module).numel())
    ranks = {p: i for i, p in enumerate(topology.parties)}
    return Schedule(ranks, sorted({e.cut for e in topology.edges()}), tails, sizes)


def planned(
    launch: Any,
    me: str,
    plan: Schedule,
    *,
    max_batch: int,
    device: torch.device,
    codecs: dict[str, Compressor] | None = None,
) -> Callable[[WireLog | None], Any]:
    """``wire_log -> channel``: ``launch.open`` for party ``me``, scheduled by ``plan``, recording
    into the wire log it is given (what each launch's ``channel`` returns)."""

    def build(log: WireLog | None) -> Any:
        return launch.open(
            me, list(plan.ranks), max_batch=max_batch, device=device, plan=plan, codecs=codecs,
            log=log,
        )  # fmt: skip

    return build
