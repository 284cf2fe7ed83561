"""Compressors at the cut, each against a direct computation: top-k keeps exactly the k largest
magnitudes and error feedback carries the residual (Stich et al. 2018); random-k keeps k seeded
coordinates; int8/int4 match torch's own affine quantisation and stay within scale / 2; 4-bit
codes pack two a byte; casts equal ``Tensor.half()`` / ``.bfloat16()``; payload sizes are the
analytic ones; a malformed payload or spec is refused in one line."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nopeek.compress import (
    COMPRESSORS,
    BFloat16,
    Compressor,
    Float16,
    Int4,
    Int8,
    RandomK,
    TopK,
    canonical,
    pack4,
    parse_compress,
    parse_compressor,
    unpack4,
)
from nopeek.errors import ChannelError, ConfigError

SHAPE = (6, 8, 3, 3)  # a batch of 6 samples of 72 values


def _x(seed: int = 0, shape=SHAPE) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _nbytes(spec: str, shape, itemsize: int = 4) -> int:
    """The payload size of ``spec`` for ``shape``, written out independently of the code."""
    n, d = shape[0], math.prod(shape[1:])
    name, _, ratio = spec.partition(":")
    if name in ("topk", "randk"):
        k = max(1, math.ceil(round(float(ratio) * d, 6)))
        return n * k * (itemsize + 4)  # values + int32 indices
    if name == "int8":
        return n * (4 + 1 + d)  # float32 scale, uint8 zero point, one byte a value
    if name == "int4":
        return n * (4 + 1 + (d + 1) // 2)  # two values a byte
    return n * d * 2  # fp16 / bf16


# --- top-k and error feedback ---------------------------------------------------------------
def test_topk_keeps_exactly_the_k_largest_magnitudes_of_each_sample():
    x = _x()
    got = TopK(ratio=0.1, feedback=False).roundtrip(x).reshape(6, -1).numpy()
    flat = x.reshape(6, -1).numpy()
    k = math.ceil(0.1 * 72)  # 8
    for row, sent in zip(flat, got):
        keep = np.argsort(-np.abs(row), kind="stable")[:k]
        want = np.zeros_like(row)
        want[keep] = row[keep]
        np.testing.assert_array_equal(sent, want)
    assert (got != 0).sum(axis=1).tolist() == [k] * 6


def test_error_feedback_adds_what_was_not_sent_to_the_next_message():
    c = TopK(ratio=0.25).bind(seed=0, party="client", kind="activation")
    x1, x2, x3 = _x(1), _x(2), _x(3)

    def top(p):  # the direct computation: keep the 18 largest magnitudes of each row
        r = p.reshape(6, -1)
        idx = r.abs().argsort(dim=1, descending=True, stable=True)[:, :18]
        return torch.zeros_like(r).scatter(1, idx, r.gather(1, idx)).reshape(p.shape)

    def sent(payload):
        return c.decode(payload, SHAPE, torch.float32)

    assert torch.equal(sent(c.compress(x1, stream="conv2>server", training=True)), top(x1))
    e1 = x1 - top(x1)
    assert torch.equal(sent(c.compress(x2, stream="conv2>server", training=True)), top(x2 + e1))
    e2 = (x2 + e1) - top(x2 + e1)
    # evaluation messages use no feedback and leave the residual as it was
    assert torch.equal(sent(c.compress(x3, stream="conv2>server", training=False)), top(x3))
    # another stream (another receiver) has its own residual
    assert torch.equal(sent(c.compress(x3, stream="conv2>server2", training=True)), top(x3))
    assert torch.equal(c.state_dict()["residual"]["conv2>server"], e2)
    # a smaller last batch gets the residual's first rows
    small = _x(4, (2, 8, 3, 3))
    got = c.decode(c.compress(small, stream="conv2>server", training=True), (2, 8, 3, 3),
                   torch.float32)  # fmt: skip
    assert torch.equal(got, top(torch.cat([small + e2[:2], torch.zeros(4, 8, 3, 3)]))[:2])


def test_topk_without_feedback_keeps_no_state():
    c = TopK(ratio=0.25, feedback=False)
    c.compress(_x(1), stream="s", training=True)
    assert c.state_dict() == {"residual": {}}


# --- random-k ---------------------------------------------------------------------------------
def test_randk_keeps_k_seeded_coordinates_with_their_exact_values():
    x = _x()
    c = RandomK(ratio=0.1).bind(seed=3, party="client", kind="activation")
    got = c.roundtrip(x).reshape(6, -1)
    flat = x.reshape(6, -1)
    kept = got != 0
    assert kept.sum(dim=1).tolist() == [8] * 6
    assert torch.equal(got[kept], flat[kept])
    again = RandomK(ratio=0.1).bind(seed=3, party="client", kind="activation").roundtrip(x)
    other = RandomK(ratio=0.1).bind(seed=3, party="client1", kind="activation").roundtrip(x)
    assert torch.equal(again.reshape(6, -1), got) and not torch.equal(other.reshape(6, -1), got)


def test_randk_state_dict_resumes_the_same_draws():
    a = RandomK(ratio=0.2).bind(seed=0, party="client", kind="activation")
    a.encode(_x(1))
    state = a.state_dict()
    b = RandomK(ratio=0.2).bind(seed=0, party="client", kind="activation")
    b.load_state_dict(state)
    assert torch.equal(a.encode(_x(2)), b.encode(_x(2)))


# --- quantisation ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, bits", [(Int8, 8), (Int4, 4)])
def test_affine_round_trip_is_within_half_a_step_and_keeps_zero(cls, bits):
    x = torch.relu(_x(5))  # ReLU activations: many exact zeros
    x[0] = 0.0  # a row of zeros (scale 1)
    codes, scale, zero = cls().quantize(x)
    assert int(codes.max()) <= 2**bits - 1
    back = cls().roundtrip(x)
    err = (back - x).abs().reshape(6, -1)
    assert (err <= scale[:, None] / 2 * (1 + 1e-5) + 1e-7).all()
    assert torch.equal(back[x == 0], x[x == 0])


@pytest.mark.parametrize("cls, bits", [(Int8, 8), (Int4, 4)])
def test_affine_matches_torch_fake_quantisation_per_sample(cls, bits):
    """torch's per-channel affine quantisation (channel axis = the batch) with our scales and
    zero points gives the same values (it multiplies by 1/scale: a tie may round the other way,
    one step at most)."""
    x = _x(6) * 3
    _, scale, zero = cls().quantize(x)
    r = x.reshape(6, -1)
    ref = torch.fake_quantize_per_channel_affine(r, scale, zero.int(), 0, 0, 2**bits - 1)
    got = cls().roundtrip(x).reshape(6, -1)
    assert ((got - ref).abs() <= scale[:, None] * 1.0001).all()
    assert (got == ref).float().mean() > 0.99


def test_four_bit_codes_pack_two_a_byte_low_nibble_first():
    codes = torch.tensor([[1, 2, 3], [15, 0, 7]], dtype=torch.uint8)
    packed = pack4(codes)
    assert packed.tolist() == [[0x21, 0x03], [0x0F, 0x07]]
    assert torch.equal(unpack4(packed, 3), codes)
    many = torch.randint(0, 16, (5, 33), dtype=torch.uint8, generator=torch.Generator())
    assert torch.equal(unpack4(pack4(many), 33), many)


@pytest.mark.parametrize("cls, dtype", [(Float16, torch.float16), (BFloat16, torch.bfloat16)])
def test_casts_send_the_cast_value(cls, dtype):
    x = _x(7) * 100
    assert torch.equal(cls().roundtrip(x), x.to(dtype).float())
    assert cls().roundtrip(x).dtype == torch.float32


# --- sizes, registry, refusals ----------------------------------------------------------------
@pytest.mark.parametrize(
    "spec", ["topk:0.1", "topk:0.5", "randk:0.05", "int8", "int4", "fp16", "bf16"]
)
@pytest.mark.parametrize("shape", [SHAPE, (1, 5), (3, 7, 1)])
def test_payload_size_is_the_analytic_one(spec, shape):
    c = parse_compressor(spec).bind(seed=0, party="client", kind="activation")
    assert c.encode(_x(8, shape)).numel() == c.nbytes(shape, torch.float32) == _nbytes(spec, shape)


def test_every_compressor_is_registered():
    found = {c.name for c in _subclasses(Compressor) if c.name}
    assert set(COMPRESSORS.names()) == found == {"topk", "randk", "int8", "int4", "fp16", "bf16"}
    codes = [COMPRESSORS.get(n).code for n in COMPRESSORS.names()]
    assert len(set(codes)) == len(codes) and 0 not in codes


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


@pytest.mark.parametrize(
    "spec, payload, match",
    [
        (
            "int8",
            torch.zeros(10, dtype=torch.uint8),
            r"int8 payload for \(6, 8, 3, 3\) torch.float32 must be 462 bytes",
        ),
        ("topk:0.1", torch.zeros(6 * 8 * 8, dtype=torch.float32), "must be 384 bytes"),
    ],
)
def test_a_payload_of_the_wrong_length_is_refused(spec, payload, match):
    with pytest.raises(ChannelError, match=match):
        parse_compressor(spec).decode(payload, SHAPE, torch.float32)


def test_out_of_range_or_repeated_indices_are_refused():
    c = TopK(ratio=0.5, feedback=False)
    payload = c.encode(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    for bad in ([0, 9], [1, 1]):  # an index past D, a repeated index
        forged = payload.clone()
        forged[8:] = torch.tensor(bad, dtype=torch.int32).view(torch.uint8)
        with pytest.raises(ChannelError, match=r"indices outside 0\.\.3 or not strictly"):
            c.decode(forged, (1, 4), torch.float32)


def test_a_bad_scale_is_refused():
    payload = Int4().encode(torch.ones(1, 4))
    payload[:4] = torch.tensor([-1.0]).view(torch.uint8)
    with pytest.raises(ChannelError, match="int4 payload has a scale that is not a finite"):
        Int4().decode(payload, (1, 4), torch.float32)


def test_specs_read_as_documented():
    both = parse_compress("int4")
    assert [(d, c.spec()) for d, c in both.items()] == [("forward", "int4"), ("backward", "int4")]
    assert canonical(" backward=fp16 , forward = randk:0.25,feedback=true") == (
        "forward=randk:0.25,feedback=true,backward=fp16"
    )
    assert canonical("forward=topk:ratio=0.1,feedback=true") == "forward=topk:0.1"
    assert parse_compress("none") == {} == parse_compress("")


@pytest.mark.parametrize(
    "text, match",
    [
        ("sideways=int8", "--compress part 'sideways=int8' names no direction; write forward="),
        ("forward=int8,backward=int9", "unknown compressor 'int9'; choose one of: bf16, fp16"),
        ("forward=topk", r"topk needs its ratio, e\.g\. topk:0\.1"),
        ("forward=topk:0", r"topk keeps a fraction in \(0, 1\]"),
        ("forward=topk:1.5", r"topk keeps a fraction in \(0, 1\]"),
        ("forward=topk:0.1,k=3", "unknown option 'k' for topk; valid options: ratio, feedback"),
        ("forward=topk:0.1,feedback=maybe", "topk feedback must be true or false"),
        ("forward=int8,forward=int4", "gives forward twice"),
        ("forward=fp16:2", "fp16 takes no options; write just fp16"),
    ],
)
def test_bad_specs_are_one_line(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_compress(text)
