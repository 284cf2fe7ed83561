"""Compressed messages on the wire, without processes: the header carries the decoded shape and
the compressor's tag; a receiver configured otherwise, or a body of another length, is refused
in one line before the body is allocated (the torch.distributed receiver asks for nothing but
the header; the gRPC receiver builds no tensor); a valid one decodes to what was sent."""

from __future__ import annotations

import pytest
import torch

from nopeek.compress import Packed, parse_compressor
from nopeek.errors import ChannelError
from nopeek.runtime import wire
from nopeek.runtime.channel import ACTIVATION, GRADIENT, WireLog
from nopeek.runtime.distributed import TorchDistributedChannel
from nopeek.runtime.grpc_bytes import Identity, join_parts
from nopeek.runtime.grpc_channel import GrpcChannel

TAIL = (16, 4, 4)
Z = torch.relu(torch.randn(3, *TAIL, generator=torch.Generator().manual_seed(0)))
IDS = torch.tensor([7, 1, 5])


def _header(spec: str | None, **fields) -> torch.Tensor:
    packed = None if spec is None else Packed(parse_compressor(spec), tuple(Z.shape), Z.dtype)
    raw = wire.encode(ACTIVATION, 0, 0, 5, Z, 3, "cpu", packed=packed)
    for k, v in fields.items():
        raw[{"codec": 15, "d0": 8}[k]] = v
    return raw


def test_header_carries_the_decoded_shape_and_the_compressors_tag():
    int8 = parse_compressor("int8")
    head = wire.decode(_header("int8"), sender_name="client")
    assert (head.shape, head.dtype, head.codec) == ((3, *TAIL), torch.float32, int8.tag)
    assert int8.tag >> 32 == 3 and wire.decode(_header(None), sender_name="client").codec == 0
    want = wire.Expect(ACTIVATION, 0, 0, 5, tail=TAIL, max_batch=64, codec=int8.tag)
    wire.check(head, want, sender_name="client", cut_name="conv2")


@pytest.mark.parametrize(
    "sent, expected, match",
    [
        ("int4", "int8", r"field codec is int4 \(tag 0x4.*\), expected int8 \(tag 0x3"),
        ("topk:0.2", "topk:0.1", r"field codec is topk \(tag .*\), expected topk \(tag"),
        (
            "fp16",
            None,
            r"field codec is fp16 .*, expected none \(uncompressed\) at cut 'conv2' "
            r"\(start every party with the same --compress\)",
        ),  # fmt: skip
        (None, "int8", r"field codec is none \(uncompressed\), expected int8"),
    ],
)
def test_a_receiver_configured_otherwise_refuses_the_header(sent, expected, match):
    tag = 0 if expected is None else parse_compressor(expected).tag
    head = wire.decode(_header(sent), sender_name="client")
    want = wire.Expect(ACTIVATION, 0, 0, 5, tail=TAIL, max_batch=64, codec=tag)
    with pytest.raises(ChannelError, match="^message from client: " + match):
        wire.check(head, want, sender_name="client", cut_name="conv2")


class _Wire:
    """What a fake peer has on the wire: the receiver's reads are served from ``chunks`` and
    every buffer it asks for is logged (shape, dtype)."""

    def __init__(self, chunks: list[torch.Tensor]) -> None:
        self.chunks, self.asked = list(chunks), []

    def recv(self, parts, sender, what) -> None:
        for part in parts:
            self.asked.append((tuple(part.shape), part.dtype))
            part.copy_(self.chunks.pop(0).reshape(part.shape))


def _distributed(codec_spec: str | None, chunks) -> tuple[TorchDistributedChannel, _Wire]:
    codecs = {} if codec_spec is None else {ACTIVATION: parse_compressor(codec_spec)}
    channel = TorchDistributedChannel(
        me="server", ranks={"client": 0, "server": 1}, cuts=["conv2"],
        expect=lambda kind, cut, sender: (TAIL, None), max_batch=64, timeout=5, codecs=codecs,
    )  # fmt: skip
    fake = _Wire(chunks)
    channel._recv = fake.recv
    return channel, fake


def test_torch_distributed_receiver_reads_the_payload_it_expects_and_decodes_it():
    c = parse_compressor("topk:0.25")
    payload = c.encode(Z)
    channel, fake = _distributed("topk:0.25", [_header("topk:0.25"), payload, IDS])
    msg = channel.recv(sender="client", receiver="server", kind=ACTIVATION, cut="conv2", step=5)
    assert fake.asked == [((16,), torch.int64), ((len(payload),), torch.uint8), ((3,), torch.int64)]
    assert torch.equal(msg.value(), c.roundtrip(Z)) and torch.equal(msg.ids, IDS)
    rec = channel.log.records[-1]
    nbytes = 3 * 64 * (4 + 4)  # 64 of 256 values a sample, float32 + int32 index each
    assert (rec.shape, rec.dtype, rec.nbytes, rec.codec) == (
        (3, *TAIL),
        "float32",
        nbytes,
        "topk:0.25",
    )


@pytest.mark.parametrize("mine", ["int8", None])
def test_torch_distributed_receiver_refuses_before_allocating_the_body(mine):
    channel, fake = _distributed(mine, [_header("int4")])
    with pytest.raises(ChannelError, match="field codec is int4"):
        channel.recv(sender="client", receiver="server", kind=ACTIVATION, cut="conv2", step=5)
    assert fake.asked == [((16,), torch.int64)]  # the header only: nothing else was allocated


def test_a_huge_compressed_batch_is_refused_before_allocation():
    channel, fake = _distributed("int8", [_header("int8", d0=10**12)])
    with pytest.raises(ChannelError, match=r"field shape has a batch of 1000000000000"):
        channel.recv(sender="client", receiver="server", kind=ACTIVATION, cut="conv2", step=5)
    assert fake.asked == [((16,), torch.int64)]


def _grpc(codec_spec: str) -> GrpcChannel:
    return GrpcChannel(
        me="server", ranks={"client": 0, "server": 1},
        addresses={"client": "127.0.0.1:1", "server": "127.0.0.1:2"},
        identity=Identity(b"", b"", b""), cuts=["conv2"],
        expect=lambda kind, cut, sender: (TAIL, None), max_batch=64, max_message=1 << 20,
        timeout=5, log=WireLog(), codecs={ACTIVATION: parse_compressor(codec_spec)},
    )  # fmt: skip


def test_grpc_receiver_decodes_a_compressed_message_and_refuses_a_short_body():
    pytest.importorskip("grpc")
    c = parse_compressor("int4")
    channel = _grpc("int4")
    channel._inbox.queues["client"].put(join_parts([_header("int4"), c.encode(Z), IDS]))
    msg = channel.recv(sender="client", receiver="server", kind=ACTIVATION, cut="conv2", step=5)
    assert torch.equal(msg.value(), c.roundtrip(Z))
    short = join_parts([_header("int4"), c.encode(Z)[:-1], IDS])  # one payload byte short
    channel._inbox.queues["client"].put(short)
    # 3 samples of 256 values: 3 * (4 + 1 + 128) payload bytes, then 3 int64 ids
    with pytest.raises(ChannelError, match=r"its body has 422 bytes, its header announces 423"):
        channel.recv(sender="client", receiver="server", kind=ACTIVATION, cut="conv2", step=5)


def test_the_sender_refuses_a_payload_that_is_not_its_compressors():
    from nopeek.runtime.channel import InProcessChannel, Message

    c = parse_compressor("int8")
    wrong = Message(GRADIENT, "conv2", "server", "client", 0, c.encode(Z)[:-3], IDS,
                    Packed(c, tuple(Z.shape), Z.dtype))  # fmt: skip
    with pytest.raises(ChannelError, match=r"int8 payload for \(3, 16, 4, 4\) .* must be"):
        InProcessChannel().post(wrong)


def test_grpc_accepts_the_largest_compressed_message(monkeypatch):
    """gRPC refuses messages over its limit: the limit covers a compressor's payload at float64
    (top-k keeping every value sends 12 bytes a float64 value, more than the tensor itself), for
    a cut of 100,000 values a sample (its batch: 77 MB of payload)."""
    pytest.importorskip("grpc")
    import nopeek.runtime.grpc_launch as gl
    from nopeek.compress import by_kind
    from nopeek.runtime.launch import Schedule

    seen = {}

    class Fake:
        def __init__(self, **kw):
            seen.update(kw)

        def start(self):
            pass

    tails = {("c", "client"): (100_000,), ("c", "server"): (100_000,)}
    plan = Schedule({"client": 0, "server": 1}, ["c"], tails, {})
    monkeypatch.setattr(gl, "schedule", lambda topology, x: plan)
    monkeypatch.setattr(gl, "GrpcChannel", Fake)
    launch = gl.GrpcLaunch({"client": "h:1", "server": "h:2"}, Identity(b"", b"", b""))
    codecs = by_kind("forward=topk:1")
    launch.channel(None, "server", x=None, max_batch=64, device="cpu", codecs=codecs)(WireLog())
    payload = codecs[ACTIVATION].nbytes((64, 100_000), torch.float64)
    assert payload > 64 * (100_000 * 8 + 8)  # more than the uncompressed bound
    assert seen["max_message"] >= wire.HEADER_LEN * 8 + payload + 8 * 64


def test_the_trainers_grpc_path_bounds_messages_by_the_compressed_payload_too():
    """A party opens its channel before the schedule and gets it later (``schedule``): that
    path sizes gRPC's limit with the compressors too, as ``channel`` does."""
    pytest.importorskip("grpc")
    from nopeek.compress import by_kind
    from nopeek.runtime import grpc_launch as gl
    from nopeek.runtime.launch import Schedule

    tails = {("c", "client"): (100_000,), ("c", "server"): (100_000,)}
    plan = Schedule({"client": 0, "server": 1}, ["c"], tails, {})
    codecs = by_kind("forward=topk:1")
    payload = codecs[ACTIVATION].nbytes((64, 100_000), torch.float64)
    planned = []
    fake = type("Channel", (), {"codecs": codecs, "plan": lambda self, *a: planned.append(a)})()
    launch = gl.GrpcLaunch({"client": "h:1", "server": "h:2"}, Identity(b"", b"", b""))
    launch.schedule(fake, plan, max_batch=64)
    assert planned[0][2] >= wire.HEADER_LEN * 8 + payload + 8 * 64
