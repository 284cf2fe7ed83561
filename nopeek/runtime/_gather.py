"""What the label party gathers from its peers in a distributed run (as JSON text messages).

Each party knows its own counters only: its loss terms per step, the bytes it sent and received,
its FLOPs, its defenses' budgets, the dCor of its own cut. At the end of every epoch each party
sends its loss terms to the label party, which sums them in exactly the order the in-process
runtime does (step by step, parties in topology order), so a distributed run reports the same
``train_loss_per_epoch`` to the last bit; at the end each party sends its metrics, and the label
party writes the one ``metrics.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from nopeek.runtime.channel import TextChannel
from nopeek.runtime.wire import STATS

if TYPE_CHECKING:
    from nopeek.runtime.inprocess import InProcessRuntime
    from nopeek.topology import Topology

_PER_PARTY = ("bytes_sent", "bytes_received", "weight_bytes", "flops", "applied")
_DATA_SUMS = ("bytes_client_to_server", "bytes_server_to_client")


class Runner(Protocol):
    """What the gathering reads of a party's run (:class:`nopeek.training.runner.Runner`)."""

    @property
    def runtime(self) -> InProcessRuntime: ...

    @property
    def parties(self) -> Mapping[str, object]:  # this process's own party
        ...

    @property
    def label_party(self) -> str: ...

    @property
    def topology(self) -> Topology: ...


def _channel(runner: Runner) -> TextChannel:
    return cast(TextChannel, runner.runtime.channel)  # only distributed runs gather


def _me(runner: Runner) -> str:
    return next(iter(runner.parties))


def epoch_loss(runner: Runner, steps: list[tuple[int, int, list[float]]]) -> float:
    """The epoch's mean training loss over all parties' terms (label party); NaN elsewhere."""
    channel, me, label = _channel(runner), _me(runner), runner.label_party
    if me != label:
        channel.send_text(STATS, label, json.dumps({"steps": steps}))
        return math.nan
    merged: dict[int, tuple[int, dict[str, list[float]]]] = {
        tick: (n, {me: values}) for tick, n, values in steps
    }
    for peer in runner.topology.parties:
        if peer == me:
            continue
        for tick, n, values in channel.recv_text(peer)["steps"]:
            merged.setdefault(int(tick), (int(n), {}))[1][peer] = [float(v) for v in values]
    total, count = 0.0, 0
    for tick in sorted(merged):
        n, per = merged[tick]
        loss = sum(v for p in runner.topology.parties for v in per.get(p, []))
        total += loss * n
        count += n
    return total / count


def metrics(runner: Runner, mine: dict[str, Any]) -> dict[str, Any] | None:
    """The run's metrics, merged at the label party from every party's own; None elsewhere."""
    channel, me, label = _channel(runner), _me(runner), runner.label_party
    mine = dict(mine)
    mine["_wire"] = [channel.header_bytes + channel.payload_bytes, channel.payload_bytes]
    if me != label:
        channel.send_text(STATS, label, json.dumps(mine))
        return None
    parts = {me: mine}
    before = channel.text_bytes_received
    for peer in runner.topology.parties:
        if peer != me:
            parts[peer] = channel.recv_text(peer)
    # the peers' final messages carry their counters, so they cannot count themselves: the
    # label party adds what it received of them
    finals = [b - a for a, b in zip(before, channel.text_bytes_received, strict=True)]
    out = _merge(runner.topology, parts, label)
    out["wire_bytes_total"] += finals[0]
    out["payload_bytes_total"] += finals[1]
    return out


def _merge(topology: Topology, parts: dict[str, dict[str, Any]], label: str) -> dict[str, Any]:
    out = {k: v for k, v in parts[label].items() if not k.startswith("_")}
    for party, part in parts.items():
        for key, value in part.items():
            if key.startswith("_") or key in _DATA_SUMS:
                continue
            own = any(key == f"{m}_{party}" for m in _PER_PARTY)
            if own or key not in out or key.startswith("dcor_"):
                out[key] = value
    for key in _DATA_SUMS:
        out[key] = sum(parts[p].get(key, 0.0) for p in topology.data_parties)
    out["wire_bytes_total"] = sum(p["_wire"][0] for p in parts.values())
    out["payload_bytes_total"] = sum(p["_wire"][1] for p in parts.values())
    return out
