"""Private sample alignment: the samples every party holds, found by private set intersection.

Vertically partitioned sites hold overlapping but different samples (hospitals with other
patients). Before a run on the parties' own files (``--id-column``), the parties agree on the
samples they all hold with the PSI protocol of `openmined-psi` (ECDH, secure against
semi-honest parties: they follow the protocol but may study what they receive). The label party
serves, every other party with data asks as a PSI client, over the run's own channel: the PSI
messages are protobuf bytes, base64 in JSON text messages, each within the wire's size bound.

For each data party in rank order:

1. the data party sends its row count and its PSI request (its ids, encrypted under its key);
2. the label party answers with its row count, its setup message (its own ids encrypted under
   its key, in a compressed set) and the request re-encrypted under its key;
3. the data party finds which of its ids the label party holds and sends that list; the label
   party checks each is one of its own.

Then the label party sends each data party the aligned list (the ids that it and every data
party hold, sorted: the aligned order), and a party without data only its length and hash.

What each party learns, and nothing more:

- the label party: each data party's row count, and which of its own ids that party also holds
  (with one data party: the aligned set);
- a data party: the label party's row count, which of its own ids the label party holds, and the
  aligned set (its own ids that every party holds);
- a party without data (vertical's server when a client holds the labels): the aligned set's
  size.

No party learns an id it does not hold itself. From then on, the sample ids on every message are
positions in the aligned order, never the ids.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from nopeek.data.keyed import KeyedRows
from nopeek.data.party import PartyData, Roster, describe_own, own_party_data, read_own, roster
from nopeek.errors import ChannelError, ConfigError, DataError
from nopeek.runtime import wire
from nopeek.runtime.channel import TextChannel

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from nopeek.config import TrainConfig
    from nopeek.runtime.launch import Launch

FPR = 1e-9
"""The chance that the label party's compressed set answers one false match to a whole query (the
label party refuses such an id, so it would stop the run, not join wrong samples)."""


def _psi() -> Any:  # openmined-psi has no types
    try:
        import private_set_intersection.python as psi
    except ModuleNotFoundError:
        raise ConfigError(
            "aligning samples privately needs openmined-psi; install it with "
            "pip install 'nopeek[deploy]'"
        ) from None
    return psi


def digest(ids: Sequence[str]) -> str:
    """SHA-256 of the aligned list (its JSON text), the same at every party that holds it.

    >>> digest(["a", "b"])[:12]
    '3554d2b8a1e3'
    """
    return hashlib.sha256(json.dumps(list(ids)).encode()).hexdigest()


@dataclass(frozen=True)
class Alignment:
    """What party ``party`` learned by aligning: the aligned samples (``ids`` in the aligned
    order; None at a party without data, which knows only their number ``size``), each party's
    row count it learned (``rows``), and per data party how many of its rows the label party
    holds, where it learned that (``matched``)."""

    party: str
    size: int
    ids: tuple[str, ...] | None
    rows: dict[str, int]
    matched: dict[str, int]
    sha256: str

    def to_json(self) -> dict[str, Any]:
        out = {"party": self.party, "aligned": self.size, "rows": self.rows}
        out |= {"matched": self.matched, "sha256": self.sha256}
        return out | ({"ids": list(self.ids)} if self.ids is not None else {})


def _send(channel: TextChannel, peer: str, message: dict[str, Any], what: str) -> None:
    text = json.dumps(message)
    if len(text.encode()) > wire.MAX_TEXT:
        raise ConfigError(
            f"the {what} is {len(text.encode())} bytes, more than one message carries "
            f"({wire.MAX_TEXT}); align fewer samples per run"
        )
    channel.send_text(wire.STATS, peer, text)


def _recv(channel: TextChannel, peer: str, step: str, fields: dict[str, type]) -> dict[str, Any]:
    """The next message from ``peer``: alignment step ``step`` with ``fields`` of those types."""
    got = channel.recv_text(peer)
    if isinstance(got, dict) and "settings" in got:
        raise ConfigError(
            f"{peer} was started without --id-column and sent its settings; give every party "
            "its own file and the same --id-column option"
        )
    ok = isinstance(got, dict) and got.get("align") == step
    ok = ok and all(
        isinstance(got.get(k), t) and not isinstance(got.get(k), bool) for k, t in fields.items()
    )
    if not ok:
        raise ChannelError(f"{peer} sent something other than the alignment's {step!r} message")
    message: dict[str, Any] = got
    return message


def _bytes(text: str, peer: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ChannelError(f"{peer} sent an alignment message that is not base64") from None


def _proto(cls: type[Message], text: str, peer: str) -> Message:
    from google.protobuf.message import DecodeError

    message = cls()
    try:
        message.ParseFromString(_bytes(text, peer))
    except DecodeError:
        raise ChannelError(f"{peer} sent a PSI message that does not parse") from None
    return message


def _ids(value: list[str], peer: str, allowed: set[str]) -> list[str]:
    """``value`` as a list of unique ids, each in ``allowed``."""
    if not all(isinstance(i, str) for i in value) or len(set(value)) != len(value):
        raise ChannelError(f"{peer} sent an id list that is not unique text")
    if not set(value) <= allowed:
        raise ChannelError(f"{peer} named ids outside the PSI result")
    return value


def align(
    channel: TextChannel, me: str, label_party: str, data_parties: list[str],
    parties: list[str], ids: Sequence[str],
) -> Alignment:  # fmt: skip
    """Align ``ids`` (this party's own, unique; empty for a party without data) with the other
    parties over ``channel`` (``send_text`` / ``recv_text``); see the module's protocol."""
    if me == label_party:
        return _serve(channel, me, [p for p in data_parties if p != me], parties, list(ids))
    if me not in data_parties:
        got = _recv(channel, label_party, "aligned", {"size": int, "sha256": str})
        return Alignment(me, got["size"], None, {}, {}, got["sha256"])
    psi = _psi()
    client = psi.client.CreateWithNewKey(True)
    request = base64.b64encode(client.CreateRequest(list(ids)).SerializeToString()).decode()
    _send(
        channel, label_party, {"align": "request", "rows": len(ids), "request": request}, "request"
    )
    fields = {"rows": int, "setup": str, "response": str}
    got = _recv(channel, label_party, "response", fields)
    setup = _proto(psi.ServerSetup, got["setup"], label_party)
    response = _proto(psi.Response, got["response"], label_party)
    try:
        found = client.GetIntersection(setup, response)
    except RuntimeError:
        raise ChannelError(f"{label_party}'s PSI response does not match this request") from None
    matched = sorted({ids[i] for i in found})
    _send(channel, label_party, {"align": "matched", "ids": matched}, "list of shared ids")
    final = _recv(channel, label_party, "aligned", {"ids": list})["ids"]
    final = _ids(final, label_party, set(matched))
    if final != sorted(final):
        raise ChannelError(f"{label_party} sent an aligned list out of order")
    rows = {me: len(ids), label_party: got["rows"]}
    return Alignment(me, len(final), tuple(final), rows, {me: len(matched)}, digest(final))


def _serve(
    channel: TextChannel, me: str, clients: list[str], parties: list[str], ids: list[str]
) -> Alignment:
    """The label party's side: PSI server to every data party, then the aligned list to all."""
    psi = _psi()
    server = psi.server.CreateWithNewKey(True)
    own = set(ids)
    rows, shared = {me: len(ids)}, set(ids)
    matched: dict[str, int] = {}
    for peer in clients:
        got = _recv(channel, peer, "request", {"rows": int, "request": str})
        request = _proto(psi.Request, got["request"], peer)
        setup = server.CreateSetupMessage(FPR, max(got["rows"], 1), ids)
        try:
            response = server.ProcessRequest(request)
        except RuntimeError:
            raise ChannelError(f"{peer}'s PSI request does not parse") from None
        answer = {"align": "response", "rows": len(ids)}
        answer["setup"] = base64.b64encode(setup.SerializeToString()).decode()
        answer["response"] = base64.b64encode(response.SerializeToString()).decode()
        _send(channel, peer, answer, "PSI response")
        theirs = _ids(_recv(channel, peer, "matched", {"ids": list})["ids"], peer, own)
        rows[peer], matched[peer] = got["rows"], len(theirs)
        shared &= set(theirs)
    final = sorted(shared)
    for peer in clients:
        _send(channel, peer, {"align": "aligned", "ids": final}, "aligned list")
    for peer in parties:
        if peer != me and peer not in clients:
            _send(
                channel,
                peer,
                {"align": "aligned", "size": len(final), "sha256": digest(final)},
                "size",
            )
    return Alignment(me, len(final), tuple(final), rows, matched, digest(final))


def exchange_shapes(
    channel: TextChannel, me: str, label_party: str, parties: list[str], mine: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Every party's data description (feature count, number of classes), gathered by the label
    party and sent to all: what each party needs to build the same model."""
    if me != label_party:
        _send(channel, label_party, {"align": "shape", "shape": mine}, "data description")
        table = _recv(channel, label_party, "shapes", {"shapes": dict})["shapes"]
        if sorted(table) != sorted(parties):
            raise ChannelError(f"{label_party} sent data descriptions of {sorted(table)}")
        return {p: _shape(table[p], label_party) for p in parties}
    table = {me: mine}
    for peer in parties:
        if peer != me:
            table[peer] = _shape(_recv(channel, peer, "shape", {"shape": dict})["shape"], peer)
    for peer in parties:
        if peer != me:
            _send(channel, peer, {"align": "shapes", "shapes": table}, "data descriptions")
    return table


def _shape(value: dict[str, Any], peer: str) -> dict[str, Any]:
    """A data description: ``features`` and ``classes``, each a positive int or None."""
    out = {k: value.get(k) for k in ("features", "classes")}
    for key, v in out.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 2**31):
            raise ChannelError(f"{peer} sent a data description whose {key} is {v!r}")
    return out


# --- a run on the parties' own files (nopeek.data.party) ---------------------------------
def align_own(
    config: TrainConfig, plan: Roster, me: str, rows: KeyedRows, channel: TextChannel
) -> PartyData:
    """Party ``me``'s :class:`PartyData`: its own ``rows`` aligned with the other parties' over
    ``channel`` (:func:`align`), after every party told the others the
    shape of its data (:func:`exchange_shapes`)."""
    done = align(channel, me, plan.label_party, plan.data_parties, plan.parties, rows.ids)
    mine = describe_own(rows, done.ids, where=f"--labels {config.labels}")
    shapes = exchange_shapes(channel, me, plan.label_party, plan.parties, mine)
    for party in plan.data_parties:
        held = any(k != "y" for k in plan.holds[party])
        if held != (shapes[party]["features"] is not None):
            raise DataError(f"{party} described its data as {shapes[party]}; start it anew")
    agreed = {"samples": done.size, "sha256": done.sha256, "shapes": shapes}
    return own_party_data(config, plan, me, rows, done.ids, done.size, shapes, agreed)


def align_files(
    config: TrainConfig, launch: Launch, *, device: torch.device | None = None
) -> Alignment:
    """Run the alignment alone: party ``launch.party(...)`` reads its own files, meets the
    others, proves the job secret if there is one and aligns; returns its
    :class:`Alignment` (``nopeek align``)."""
    config.validate()
    device = device if device is not None else torch.device("cpu")
    plan = roster(config)
    me = launch.party(plan)
    rows = read_own(config, plan, me)
    launch.join(me, device, [p for p in plan.parties if p != me])
    channel = launch.open(me, plan.parties, max_batch=1, device=device)
    try:
        if launch.secret is not None:
            from nopeek.runtime.handshake import prove

            prove(channel, me, plan.label_party, plan.parties, launch.secret)
        return align(channel, me, plan.label_party, plan.data_parties, plan.parties, rows.ids)
    except Exception as exc:
        channel.broadcast_error(f"{me}: {str(exc).splitlines()[0][:300]}")
        raise
    finally:
        launch.close(channel)
