"""The parties' agreement on what they run, and each receiver's check of a message's sample ids.

The real processes (every mismatched flag ends every party with one line) are in
``test_distributed.py``; these are the pieces on their own.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from nopeek.config import TrainConfig
from nopeek.errors import ChannelError, ConfigError
from nopeek.runtime.channel import ACTIVATION, Message
from nopeek.runtime.handshake import LOCAL_FIELDS, agree, differences, fingerprint
from nopeek.runtime.party import Party


def test_fingerprint_holds_every_shared_field_and_the_start_mode():
    config = TrainConfig(alpha=1.0, defenses=["max-norm"]).to_dict()
    fp = fingerprint(config, resume=True)
    assert fp["start"] == "resume" and fp["alpha"] == 1.0 and fp["defenses"] == ["max-norm"]
    assert set(fp) == (set(config) - LOCAL_FIELDS) | {"start"}


def test_differences_name_each_field_with_both_values():
    mine = fingerprint(TrainConfig(seed=1, epochs=3).to_dict(), resume=False)
    theirs = fingerprint(TrainConfig(seed=0).to_dict(), resume=True)
    got = differences(mine, theirs, me="server", peer="client0")
    assert got == [
        "epochs (client0 30, server 3)",
        "seed (client0 0, server 1)",
        "start (client0 resume, server fresh)",
    ]
    assert differences(mine, dict(mine), me="server", peer="client0") == []


class _Wire:
    """Two ends of a text channel in one process: what one sends, the other receives."""

    def __init__(self, inbox: dict[str, list]) -> None:
        self.inbox, self.sent = inbox, []

    def send_text(self, kind, receiver, text):
        import json

        self.sent.append((receiver, json.loads(text)))

    def recv_text(self, sender):
        return self.inbox[sender].pop(0)


def _hi(settings: dict, epoch: int) -> dict:
    return {"settings": dict(settings), "epoch": epoch}


def test_the_label_party_refuses_any_difference_and_answers_agreement_otherwise():
    mine = fingerprint(TrainConfig().to_dict(), resume=False)
    other = dict(mine) | {"alpha": 3.0}
    wire = _Wire({"client0": [_hi(mine, 2)], "client1": [_hi(other, 2)]})
    with pytest.raises(ConfigError, match=r"differ: alpha \(client1 3.0, server 0.0\); start"):
        agree(wire, "server", "server", ["client0", "client1", "server"], mine)
    assert wire.sent == []  # nobody is told "agreed"
    wire = _Wire({"client0": [_hi(mine, 2)], "client1": [_hi(mine, 1)]})
    assert agree(wire, "server", "server", ["client0", "client1", "server"], mine, epoch=2) == 1
    answer = {"agreed": True, "epoch": 1}  # the last epoch every party has a checkpoint of
    assert wire.sent == [("client0", answer), ("client1", answer)]


def test_a_peer_sends_its_fingerprint_and_waits_for_the_verdict():
    mine = fingerprint(TrainConfig().to_dict(), resume=False)
    wire = _Wire({"server": [{"agreed": True, "epoch": 0}]})
    assert agree(wire, "client", "server", ["client", "server"], mine, epoch=3) == 0
    assert wire.sent == [("server", _hi(mine, 3))]
    with pytest.raises(ChannelError, match="answered the handshake with"):
        agree(_Wire({"server": [["not", "a verdict"]]}), "client", "server", ["c", "server"], mine)


def test_a_receiver_refuses_a_message_for_other_samples():
    me = SimpleNamespace(view={"ids": torch.tensor([3, 4, 5])})
    ok = Message(
        ACTIVATION, "conv2", "client", "server", 7, torch.zeros(3, 2), torch.tensor([3, 4, 5])
    )
    assert Party._received(me, ok) is ok
    bad = Message(
        ACTIVATION, "conv2", "client", "server", 7, torch.zeros(3, 2), torch.tensor([3, 9, 5])
    )
    with pytest.raises(
        ChannelError, match=r"carries sample 9 at row 1 where this party's batch has 4"
    ):
        Party._received(me, bad)
    short = Message(
        ACTIVATION, "conv2", "client", "server", 7, torch.zeros(2, 2), torch.tensor([3, 4])
    )
    with pytest.raises(ChannelError, match="carries 2 samples where this party's batch has 3"):
        Party._received(me, short)
