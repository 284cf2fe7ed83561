"""The start-up handshake of a distributed run: the parties agree on what they run.

Before the first tensor crosses, every party sends the label party the fingerprint of its
settings (:func:`fingerprint`: every :class:`~nopeek.config.TrainConfig` field that must be the
same everywhere, the defenses of every party as configured, and whether it starts afresh or
resumes). The label party compares each with its own and either answers "agreed" to every peer
or stops with one line naming each differing field with both values, which
:meth:`~nopeek.runtime.distributed.TorchDistributedChannel.broadcast_error` delivers to every
party. Without it, a client started with ``--seed 0`` and a server with ``--seed 1`` trained on
mispaired labels and exited 0, and a server's ``config.json`` recorded a NoPeek weight that its
client never applied. The fingerprints travel as JSON text (``stats`` messages), parsed as data.
"""

from __future__ import annotations

import json
from typing import Any

from nopeek.errors import ChannelError, ConfigError
from nopeek.runtime import wire

# Fields that are this party's own business: where its data live, its device, what it records,
# and the learning rate of its own optimizer (it steps only its own segments).
LOCAL_FIELDS = frozenset({"device", "data_root", "download", "record_samples", "tensorboard", "lr"})


def fingerprint(settings: dict[str, Any], *, resume: bool) -> dict[str, Any]:
    """The settings every party must share: ``settings`` (a config's ``to_dict()``) less
    :data:`LOCAL_FIELDS`, plus ``start`` (``resume`` or ``fresh``).

    >>> fingerprint({"seed": 0, "device": "cpu"}, resume=False)
    {'seed': 0, 'start': 'fresh'}
    """
    shared = {k: v for k, v in settings.items() if k not in LOCAL_FIELDS}
    return shared | {"start": "resume" if resume else "fresh"}


def differences(mine: dict[str, Any], theirs: dict[str, Any], *, me: str, peer: str) -> list[str]:
    """One entry per field whose value differs, naming both parties' values.

    >>> differences({"seed": 0, "lr": 0.1}, {"seed": 1, "lr": 0.1}, me="server", peer="client")
    ['seed (client 1, server 0)']
    """
    fields = sorted(set(mine) | set(theirs))
    missing = "(not set)"
    return [
        f"{k} ({peer} {theirs.get(k, missing)!r}, {me} {mine.get(k, missing)!r})".replace("'", "")
        for k in fields
        if mine.get(k, missing) != theirs.get(k, missing)
    ]


def agree(channel, me: str, label_party: str, parties: list[str], mine: dict[str, Any]) -> None:
    """Exchange fingerprints over ``channel`` (a distributed channel with ``send_text`` and
    ``recv_text``); returns once every party agreed, else raises one line (the label party a
    :class:`ConfigError` naming every difference; a peer the label party's error)."""
    if me != label_party:
        channel.send_text(wire.STATS, label_party, json.dumps(mine))
        verdict = channel.recv_text(label_party)
        if verdict != {"agreed": True}:
            raise ChannelError(f"{label_party} answered the handshake with {verdict!r}")
        return
    diffs = []
    for peer in parties:
        if peer == me:
            continue
        theirs = channel.recv_text(peer)
        if not isinstance(theirs, dict):
            raise ChannelError(f"{peer} sent a handshake that is not a JSON object of settings")
        diffs += differences(mine, theirs, me=me, peer=peer)
    if diffs:
        raise ConfigError(
            f"the parties' settings differ: {'; '.join(diffs)}; start every party with the same "
            "flags (and all with --resume, or none)"
        )
    for peer in parties:
        if peer != me:
            channel.send_text(wire.STATS, peer, json.dumps({"agreed": True}))
