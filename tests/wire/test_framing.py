"""Varint framing: round trips under any split, and every bad input is a ProtocolError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dscluster.errors import BadRequestError, ProtocolError
from dscluster.wire.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    FrameDecoder,
    encode_frame,
    encode_varint,
)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02"),
     (16384, b"\x80\x80\x01")],
)
def test_varint_vectors(value, encoded):
    # Vectors from the multiformats unsigned-varint spec.
    assert encode_varint(value) == encoded


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


@given(
    payloads=st.lists(st.binary(max_size=600), max_size=20),
    cuts=st.lists(st.integers(min_value=0), max_size=30),
)
def test_frames_survive_any_split(payloads, cuts):
    stream = b"".join(encode_frame(p) for p in payloads)
    dec = FrameDecoder()
    got = []
    for piece in _split(stream, cuts):
        dec.feed(piece)
        got.extend(dec.frames())
    dec.feed_eof()
    assert got == payloads
    assert dec.buffered == 0


@settings(max_examples=300)
@given(data=st.binary(max_size=200), cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_garbage_raises_only_protocol_error(data, cuts):
    dec = FrameDecoder(max_frame_size=64)
    try:
        for piece in _split(data, cuts):
            dec.feed(piece)
            for frame in dec.frames():
                assert len(frame) <= 64
        dec.feed_eof()
    except ProtocolError:
        pass


def test_oversized_length_fails_before_the_body_arrives():
    dec = FrameDecoder(max_frame_size=1024)
    dec.feed(encode_varint(1025))  # only the prefix: no body buffered yet
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        dec.next_frame()


def test_oversized_length_fails_on_a_partial_varint():
    dec = FrameDecoder(max_frame_size=1000)
    dec.feed(b"\xff\xff")  # continuation set, value already above 1000
    with pytest.raises(ProtocolError):
        dec.next_frame()


def test_frame_at_the_limit_is_accepted():
    dec = FrameDecoder(max_frame_size=100)
    dec.feed(encode_frame(b"x" * 100))
    assert dec.next_frame() == b"x" * 100


def test_overlong_and_non_minimal_varints_are_rejected():
    dec = FrameDecoder(max_frame_size=2**62)
    dec.feed(b"\x80" * 9 + b"\x01")
    with pytest.raises(ProtocolError, match="longer than 9"):
        dec.next_frame()
    dec = FrameDecoder()
    dec.feed(b"\x81\x00")  # 1 encoded in two bytes
    with pytest.raises(ProtocolError, match="minimally"):
        dec.next_frame()


@pytest.mark.parametrize("tail", [b"\x85", b"\x05abc"])
def test_truncation_at_eof(tail):
    dec = FrameDecoder()
    dec.feed(encode_frame(b"whole") + tail)
    assert dec.next_frame() == b"whole"
    assert dec.next_frame() is None
    with pytest.raises(ProtocolError, match="truncated"):
        dec.feed_eof()


def test_clean_eof_and_data_after_eof():
    dec = FrameDecoder()
    dec.feed(encode_frame(b""))
    assert dec.next_frame() == b""
    dec.feed_eof()
    with pytest.raises(ProtocolError):
        dec.feed(b"\x00")


def test_encoder_refuses_oversized_payload():
    with pytest.raises(BadRequestError):
        encode_frame(b"x" * 11, max_frame_size=10)
    assert DEFAULT_MAX_FRAME_SIZE >= 4 * 1024 * 1024 + 4096


def test_buffer_is_compacted_on_a_long_stream():
    dec = FrameDecoder()
    frame = encode_frame(b"y" * 1000)
    for _ in range(2000):
        dec.feed(frame)
        assert dec.next_frame() == b"y" * 1000
    assert len(dec._buf) < 10 * len(frame)
