"""The wire header on its own, no processes: encode/decode round trip, malformed or oversized
headers refused before anything is allocated (against hand-made headers), and no pickled
objects anywhere in the runtime's source. The real pair is in ``test_distributed_faults.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nopeek.errors import ChannelError
from nopeek.runtime import wire
from nopeek.runtime.channel import ACTIVATION, GRADIENT, WEIGHTS
from tests.nopeek._wire_helpers import HEADER_BYTES, _raw, _shape

# --- 4. the header: malformed or oversized, rejected before anything is allocated -----------
ACT = wire.Expect(ACTIVATION, 0, 0, 5, tail=(16, 4, 4), max_batch=64)


def test_header_round_trip_is_sixteen_int64():
    raw = wire.encode(GRADIENT, 2, 1, 7, torch.zeros(3, 16, 4, 4, dtype=torch.float64), 3, "cpu")
    assert raw.dtype == torch.int64 and raw.shape == (16,) and wire.HEADER_LEN * 8 == HEADER_BYTES
    head = wire.decode(raw, sender_name="server")
    assert head == wire.Header(GRADIENT, 2, 1, 7, torch.float64, (3, 16, 4, 4), 3)
    wire.check(
        head,
        wire.Expect(GRADIENT, 2, 1, 7, tail=(16, 4, 4), max_batch=3),
        sender_name="server",
        cut_name="conv2",
    )


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"magic": 0x1234}, r"message from client is not a nopeek header \(magic/version 0x1234"),
        ({"version": 2}, r"not a nopeek header \(magic/version 0x4e4f5045/2\)"),
        ({"kind": 99}, "message from client has an unknown kind code 99"),
        ({"dtype": 0}, "message from client has an unknown dtype code 0"),
        ({"dtype": 99}, "unknown dtype code 99"),
        ({"ndim": 7}, r"has 7 dims \(at most 6\)"),
        ({"ndim": -1}, r"has -1 dims"),
        ({"d0": -3}, r"negative size in its shape \(-3, 16, 4, 4\)"),
        ({"n_ids": -1}, "negative size .* or id count -1"),
    ],
)
def test_decode_refuses_a_malformed_header(fields, match):
    with pytest.raises(ChannelError, match=match):
        wire.decode(_raw(**fields), sender_name="client")


@pytest.mark.parametrize(
    "fields, want, match",
    [
        # a huge shape: (10**12, 32, 4, 4) float32 would be 2 PB; refused on the tail
        (_shape(10**12, 32, 4, 4) | {"n_ids": 10**12}, ACT, r"field shape is \(1000000000000, 32"),
        (_shape(10**12, 16, 4, 4) | {"n_ids": 10**12}, ACT, r"batch of 1000000000000, .* 1\.\.64"),
        (_shape(0, 16, 4, 4) | {"n_ids": 0}, ACT, r"batch of 0, expected 1\.\.64"),
        (_shape(3, 16, 4), ACT, r"field shape is \(3, 16, 4\), expected \(N, 16, 4, 4\)"),
        (_shape(3, 16, 4, 4, 1), ACT, r"field shape is \(3, 16, 4, 4, 1\)"),
        ({"dtype": wire.DTYPE_CODES[torch.int64]}, ACT, "field dtype is torch.int64"),
        ({"dtype": wire.DTYPE_CODES[torch.uint8]}, ACT, "field dtype is torch.uint8"),
        (
            {"dtype": wire.DTYPE_CODES[torch.float64]},
            wire.Expect(
                ACTIVATION, 0, 0, 5, tail=(16, 4, 4), max_batch=64, dtypes=(torch.float32,)
            ),
            "field dtype is torch.float64",
        ),
        ({"n_ids": 2}, ACT, r"field n_ids is 2, expected one per row \(3\)"),
        (
            {"kind": wire.KIND_CODES[GRADIENT]},
            ACT,
            "expected an activation at cut 'conv2', got grad",
        ),
        ({"step": 6}, ACT, "field cut/sender/step is 0/0/6, expected 0/0/5"),
        ({"sender": 2}, ACT, "field cut/sender/step is 0/2/5"),
        ({"cut": 1}, ACT, "field cut/sender/step is 1/0/5"),
    ],
)
def test_check_refuses_what_the_schedule_does_not_expect(fields, want, match):
    head = wire.decode(_raw(**fields), sender_name="client")
    with pytest.raises(ChannelError, match="message from client: " + ".*" + match):
        wire.check(head, want, sender_name="client", cut_name="conv2")


def test_check_bounds_weights_and_texts():
    flat = wire.decode(wire.encode(WEIGHTS, 0, 1, 3, torch.zeros(99), 0, "cpu"), sender_name="c")
    with pytest.raises(ChannelError, match=r"field shape is \(99,\), expected \(100,\)"):
        wire.check(flat, wire.Expect(WEIGHTS, 0, 1, 3, flat=100), sender_name="c", cut_name="x")
    wire.check(flat, wire.Expect(WEIGHTS, 0, 1, 3, flat=99), sender_name="c", cut_name="x")
    text = wire.Expect(wire.STATS, -1, 1, 0, dtypes=(torch.uint8,))
    big = torch.zeros(wire.MAX_TEXT + 1, dtype=torch.uint8)
    head = wire.decode(wire.encode(wire.STATS, -1, 1, 0, big, 0, "cpu"), sender_name="c")
    with pytest.raises(ChannelError, match=f"expected at most {wire.MAX_TEXT} bytes"):
        wire.check(head, text, sender_name="c", cut_name="-")
    square = torch.zeros(4, 4, dtype=torch.uint8)
    head = wire.decode(wire.encode(wire.STATS, -1, 1, 0, square, 0, "cpu"), sender_name="c")
    with pytest.raises(ChannelError, match=r"field shape is \(4, 4\)"):
        wire.check(head, text, sender_name="c", cut_name="-")
    head = wire.decode(wire.encode(wire.STATS, -1, 1, 0, big[:10], 0, "cpu"), sender_name="c")
    wire.check(head, text, sender_name="c", cut_name="-")


@pytest.mark.parametrize("kind", [WEIGHTS, wire.STATS])
def test_check_refuses_ids_on_a_message_without_a_batch(kind):
    """A weights or stats header announcing 13 billion sample ids is refused before the ids'
    100 GB buffer is allocated (only activations and gradients carry ids)."""
    dtype = torch.uint8 if kind == wire.STATS else torch.float32
    tensor = torch.zeros(10, dtype=dtype)
    head = wire.decode(wire.encode(kind, 0, 1, 3, tensor, 13_000_000_000, "cpu"), sender_name="c")
    want = wire.Expect(kind, 0, 1, 3, flat=10 if kind == WEIGHTS else None, dtypes=(dtype,))
    with pytest.raises(ChannelError, match=f"n_ids is 13000000000, expected 0 for a {kind}"):
        wire.check(head, want, sender_name="c", cut_name="x")


def test_encode_refuses_what_the_header_cannot_describe():
    with pytest.raises(ChannelError, match="cannot send a 7-d tensor; at most 6 dims"):
        wire.encode(ACTIVATION, 0, 0, 0, torch.zeros([1] * 7), 0, "cpu")
    with pytest.raises(ChannelError, match="cannot send dtype torch.complex64"):
        wire.encode(ACTIVATION, 0, 0, 0, torch.zeros(2, dtype=torch.complex64), 0, "cpu")


def test_no_pickled_objects_in_the_runtime_source():
    """The runtime never uses torch.distributed's pickling calls (the children also make them
    raise, see ``DRIVER``)."""
    import ast

    import nopeek.runtime as runtime

    banned = {"send_object_list", "recv_object_list", "broadcast_object_list", "gather_object"}
    banned |= {"all_gather_object", "scatter_object_list", "pickle", "marshal", "dill"}
    for path in Path(runtime.__file__).parent.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names |= {a.name.split(".")[0] for a in node.names}
                names.add(getattr(node, "module", None))
        assert not names & banned, f"{path.name} uses {names & banned}"
