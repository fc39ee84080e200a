from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycluster.transport import FrameDecoder, FrameError, encode_frame

messages = st.fixed_dictionaries(
    {"t": st.text(max_size=10)},
    optional={
        "body": st.recursive(
            st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | st.binary(),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=5), inner, max_size=4)
            ),
            max_leaves=10,
        )
    },
)


@given(st.lists(messages, max_size=5), st.data())
def test_frames_round_trip_however_the_stream_is_cut(
    sent: list[dict[str, object]], data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(m) for m in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = FrameDecoder(max_frame_size=1 << 20)
    received = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        received += decoder.feed(stream[start:end])
    assert received == sent
    assert decoder.pending == 0


def test_an_oversized_length_prefix_is_refused_before_buffering() -> None:
    decoder = FrameDecoder(max_frame_size=1024)
    with pytest.raises(FrameError, match="frame of 1073741824 bytes exceeds the 1024 cap"):
        decoder.feed(struct.pack(">I", 1 << 30) + b"x" * 10)


def test_a_truncated_frame_waits_for_the_rest() -> None:
    frame = encode_frame({"t": "tick"})
    decoder = FrameDecoder(max_frame_size=1024)
    assert decoder.feed(frame[:-1]) == []
    assert decoder.feed(frame[-1:]) == [{"t": "tick"}]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xc1", "undecodable"),
        (msgpack.packb([1, 2]), "must hold a map"),
        (msgpack.packb({"x": 1}), "must hold a map"),
        (msgpack.packb({"t": 5}), "must hold a map"),
        (msgpack.packb({1: "t"}), "undecodable"),
        (msgpack.packb({"t": msgpack.ExtType(1, b"x")}), "extension type 1"),
        (msgpack.packb({"t": "a"}) + b"\x00", "undecodable"),
    ],
)
def test_bad_frames_are_refused(payload: bytes, reason: str) -> None:
    decoder = FrameDecoder(max_frame_size=1024)
    with pytest.raises(FrameError, match=reason):
        decoder.feed(struct.pack(">I", len(payload)) + payload)


@given(st.binary(max_size=300))
def test_random_bytes_either_decode_or_raise_frame_error(junk: bytes) -> None:
    decoder = FrameDecoder(max_frame_size=256)
    try:
        messages = decoder.feed(junk)
    except FrameError:
        return
    assert all(isinstance(m, dict) and isinstance(m["t"], str) for m in messages)


def test_a_large_frame_in_small_pieces_then_more_frames_in_the_last_piece() -> None:
    big = encode_frame({"t": "msg", "body": b"x" * 100_000})
    stream = big + encode_frame({"t": "a"}) + encode_frame({"t": "b"})[:3]
    decoder = FrameDecoder(max_frame_size=1 << 20)
    cut = len(big) - 10
    for start in range(0, cut, 1000):
        assert decoder.feed(stream[start : min(start + 1000, cut)]) == []
    assert decoder.pending == cut
    assert decoder.feed(stream[cut:]) == [{"t": "msg", "body": b"x" * 100_000}, {"t": "a"}]
    assert decoder.pending == 3  # a partial header waits for the rest
    assert decoder.feed(encode_frame({"t": "b"})[3:]) == [{"t": "b"}]
    assert decoder.pending == 0
