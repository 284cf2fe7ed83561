"""The start-up handshake of a distributed run: the parties prove who they are and agree on
what they run.

On a trusted network (torch.distributed, whose rendezvous accepts any process that reaches the
master port) a job secret shared out of band is the proof: :func:`prove` is a mutual HMAC
challenge between each party and the label party, before anything else is sent. A peer first
checks the label party's answer to its own random challenge, so it never sends a tensor, an id
or its settings to a process that does not hold the secret. (Over gRPC the parties' certificates
are the proof, see :mod:`nopeek.runtime.grpc_channel`.)

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

import hashlib
import hmac
import json
import secrets
from typing import Any

from nopeek.errors import ChannelError, ConfigError, PeerError
from nopeek.runtime import wire
from nopeek.runtime.channel import TextChannel

# Fields that are this party's own business: where its data live, its device, what it records,
# and the learning rate of its own optimizer (it steps only its own segments).
LOCAL_FIELDS = frozenset({"device", "data_root", "download", "record_samples", "tensorboard", "lr"})
LOCAL_FIELDS |= {"labels", "id_column", "columns"}  # a party's own files (nopeek.data.party)
# Fields that name the data set; where each party reads its own files they are each party's own
# (its file, its label column) and what must agree about the data is compared instead
SOURCE_FIELDS = frozenset({"dataset", "target", "image_size", "class_names"})


def fingerprint(
    settings: dict[str, Any], *, resume: bool, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The settings every party must share: ``settings`` (a config's ``to_dict()``) less
    :data:`LOCAL_FIELDS`, plus ``start`` (``resume`` or ``fresh``). With ``data`` (each party
    reads its own files: what the parties agreed on about the data, such as the number and a
    hash of the aligned samples) that replaces the :data:`SOURCE_FIELDS`.

    >>> fingerprint({"seed": 0, "device": "cpu"}, resume=False)
    {'seed': 0, 'start': 'fresh'}
    >>> fingerprint({"seed": 0, "dataset": "csv:mine.csv"}, resume=False, data={"samples": 80})
    {'seed': 0, 'start': 'fresh', 'data': {'samples': 80}}
    """
    local = LOCAL_FIELDS | (SOURCE_FIELDS if data is not None else frozenset())
    shared = {k: v for k, v in settings.items() if k not in local}
    return shared | {"start": "resume" if resume else "fresh"} | ({"data": data} if data else {})


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


def agree(
    channel: TextChannel,
    me: str,
    label_party: str,
    parties: list[str],
    mine: dict[str, Any],
    *,
    epoch: int = 0,
) -> int:
    """Exchange fingerprints over ``channel`` (a distributed channel with ``send_text`` and
    ``recv_text``); returns, once every party agreed, the last epoch every party has a
    checkpoint of (the minimum of each party's ``epoch``: where a resumed run restarts). Any
    difference raises one line (the label party a :class:`ConfigError` naming every difference;
    a peer the label party's error)."""
    if me != label_party:
        channel.send_text(wire.STATS, label_party, json.dumps({"settings": mine, "epoch": epoch}))
        verdict = channel.recv_text(label_party)
        if not (isinstance(verdict, dict) and verdict.get("agreed") is True):
            raise ChannelError(f"{label_party} answered the handshake with {verdict!r}")
        return _epoch(verdict.get("epoch"), label_party)
    diffs, common = [], epoch
    for peer in parties:
        if peer == me:
            continue
        theirs = channel.recv_text(peer)
        if isinstance(theirs, dict) and "nonce" in theirs:
            raise ConfigError(
                f"{peer} asks for the job secret, which this party was not given; give every "
                "party the same --job-secret-file"
            )
        if isinstance(theirs, dict) and "align" in theirs:
            raise ConfigError(
                f"{peer} reads its own files keyed by --id-column and asks to align the samples; "
                "this party was started without --id-column: give every party its own file "
                "and the same --id-column option"
            )
        if not (isinstance(theirs, dict) and isinstance(theirs.get("settings"), dict)):
            raise ChannelError(f"{peer} sent a handshake that is not a JSON object of settings")
        diffs += differences(mine, theirs["settings"], me=me, peer=peer)
        common = min(common, _epoch(theirs.get("epoch"), peer))
    if diffs:
        raise ConfigError(
            f"the parties' settings differ: {'; '.join(diffs)}; start every party with the same "
            "flags (and all with --resume, or none)"
        )
    for peer in parties:
        if peer != me:
            channel.send_text(wire.STATS, peer, json.dumps({"agreed": True, "epoch": common}))
    return common


def _epoch(value: Any, peer: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ChannelError(f"{peer} sent a handshake whose checkpoint epoch is {value!r}")
    return value


def _mac(secret: bytes, sender: str, receiver: str, nonce: str) -> str:
    return hmac.new(secret, f"{sender}>{receiver}|{nonce}".encode(), hashlib.sha256).hexdigest()


def prove(
    channel: TextChannel, me: str, label_party: str, parties: list[str], secret: bytes
) -> None:
    """Mutual HMAC-SHA256 challenge over ``channel`` between the label party and every other
    party, keyed by the job ``secret``; a party that cannot prove it is one line (and the peer
    that doubted the label party sends it nothing more).

    Each side's proof covers its own name, the other's and the other's fresh random nonce, so a
    proof can be neither replayed nor reflected.
    """
    if me != label_party:
        nonce = secrets.token_hex(16)
        channel.send_text(wire.STATS, label_party, json.dumps({"nonce": nonce}))
        try:
            answer, why = channel.recv_text(label_party), "a wrong proof"
        except PeerError as exc:  # its error, or silence: no proof either way
            answer, why = None, str(exc)
        want = _mac(secret, label_party, me, nonce)
        if not (isinstance(answer, dict) and hmac.compare_digest(str(answer.get("proof")), want)):
            raise ChannelError(
                f"{label_party} could not prove the job secret ({why}); this party sent it "
                "nothing but a random challenge. Is another process on its address? Give every "
                "party the same --job-secret-file"
            )
        theirs = str(answer.get("nonce", ""))
        channel.send_text(
            wire.STATS, label_party, json.dumps({"proof": _mac(secret, me, label_party, theirs)})
        )
        return
    for peer in parties:
        if peer == me:
            continue
        challenge = channel.recv_text(peer)
        if not (isinstance(challenge, dict) and isinstance(challenge.get("nonce"), str)):
            raise ConfigError(
                f"{peer} did not answer the job-secret challenge; give every party the same "
                "--job-secret-file"
            )
        nonce = secrets.token_hex(16)
        proof = _mac(secret, me, peer, challenge["nonce"])
        channel.send_text(wire.STATS, peer, json.dumps({"nonce": nonce, "proof": proof}))
        answer = channel.recv_text(peer)
        want = _mac(secret, peer, me, nonce)
        if not (isinstance(answer, dict) and hmac.compare_digest(str(answer.get("proof")), want)):
            raise ConfigError(
                f"{peer} could not prove the job secret; give every party the same "
                "--job-secret-file"
            )
