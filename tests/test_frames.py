from __future__ import annotations

import gc
import struct
import time
from collections.abc import Callable

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycluster.codec import Codec, Limits, Undecoded
from pycluster.transport import PREAUTH, FrameDecoder, FrameError, FrameLimits, encode_frame
from pycluster.transport.frames import SLICE, Frame, UndecodableFrame

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
MIB = FrameLimits.authenticated(1 << 20)


def decoder_for(max_frame_size: int) -> FrameDecoder:
    return FrameDecoder(FrameLimits.authenticated(max_frame_size))


def feed(decoder: FrameDecoder, data: bytes) -> list[Frame]:
    """Feed, then decode until the decoder has nothing more it could decode now."""
    decoder.feed(data)
    out = decoder.decode()
    while decoder.ready:
        out += decoder.decode()
    return out


def read(decoder: FrameDecoder, data: bytes) -> list[Frame]:
    """As a link reads: ``decode_read`` when nothing waits, else :func:`feed`."""
    out = decoder.decode_read(data)
    if out is None:
        return feed(decoder, data)
    while decoder.ready:
        out += decoder.decode()
    return out


@pytest.mark.parametrize("reads", [feed, read])
@given(st.lists(messages, max_size=5), st.data())
def test_frames_round_trip_however_the_stream_is_cut(
    reads: Callable[[FrameDecoder, bytes], list[Frame]],
    sent: list[dict[str, object]],
    data: st.DataObject,
) -> None:
    stream = b"".join(encode_frame(m) for m in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = FrameDecoder(MIB)
    received = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        received += reads(decoder, stream[start:end])
    assert received == sent
    assert decoder.pending == 0


@pytest.mark.parametrize("reads", [feed, read])
@given(
    st.lists(st.binary(min_size=0, max_size=3 * SLICE), min_size=1, max_size=4),
    st.integers(1, 5 * SLICE),
)
def test_large_frames_decode_in_pieces_whatever_the_reads(
    reads: Callable[[FrameDecoder, bytes], list[Frame]], bodies: list[bytes], read: int
) -> None:
    stream = b"".join(encode_frame({"t": "m", "b": [body, len(body)]}) for body in bodies)
    decoder = FrameDecoder(MIB)
    received = []
    for start in range(0, len(stream), read):
        received += reads(decoder, stream[start : start + read])
    assert received == [{"t": "m", "b": [body, len(body)]} for body in bodies]
    assert decoder.pending == 0


def test_an_oversized_length_prefix_is_refused_before_buffering() -> None:
    decoder = decoder_for(1024)
    with pytest.raises(FrameError, match="frame of 1073741824 bytes exceeds the 1024 cap"):
        feed(decoder, struct.pack(">I", 1 << 30) + b"x" * 10)


def test_a_truncated_frame_waits_for_the_rest() -> None:
    frame = encode_frame({"t": "tick"})
    decoder = decoder_for(1024)
    assert feed(decoder, frame[:-1]) == []
    assert feed(decoder, frame[-1:]) == [{"t": "tick"}]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xc1", "undecodable"),
        (msgpack.packb([1, 2]), "must hold a map"),
        (msgpack.packb({"x": 1}), "must hold a map"),
        (msgpack.packb({"t": 5}), "must hold a map"),
        (msgpack.packb({1: "t"}), "must hold a map"),
        (msgpack.packb({"t": msgpack.ExtType(1, b"x")}), "must hold a map"),
        (msgpack.packb({"t": msgpack.Timestamp(1, 0)}), "must hold a map"),
        (msgpack.packb({"t": "a"}) + b"\x00", "undecodable"),
        (b"\x82\xa1t\xa1a\xc7\x02\xff\x00\x00", "undecodable"),  # a timestamp of 2 bytes
    ],
)
def test_bad_frames_are_refused(payload: bytes, reason: str) -> None:
    decoder = decoder_for(1024)
    with pytest.raises(FrameError, match=reason):
        feed(decoder, struct.pack(">I", len(payload)) + payload)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (msgpack.packb({"t": "a", "x": b"y" * 3 * SLICE}) + b"\x00", "bytes after the value"),
        (msgpack.packb({"t": "a", "x": b"y" * 3 * SLICE})[:-1], "truncated"),
        (msgpack.packb({"t": "a", "x": [0] * 70_000}), "undecodable"),  # over max_items
        (msgpack.packb({"t": 1, "x": b"y" * 3 * SLICE}), "must hold a map"),
        # A tuple key stops the first pass; the second still finds what is wrong after it.
        (msgpack.packb({"t": "a", (1,): [b"y" * 40] * 1000}) + b"\x00", "bytes after the value"),
        (msgpack.packb({"t": "a", (1,): [b"y" * 40] * 1000})[:-1], "truncated"),
    ],
)
def test_bad_large_frames_are_refused(payload: bytes, reason: str) -> None:
    assert len(payload) > SLICE
    decoder = decoder_for(1 << 20)
    with pytest.raises(FrameError, match=reason):
        feed(decoder, struct.pack(">I", len(payload)) + payload)


def test_a_timestamp_marker_inside_binary_data_is_fine() -> None:
    body = b"\xd6\xff\xd7\xff" * 100
    assert feed(decoder_for(1024), encode_frame({"t": "m", "b": body})) == [{"t": "m", "b": body}]


@given(st.binary(max_size=300))
def test_random_bytes_either_decode_or_raise_frame_error(junk: bytes) -> None:
    decoder = decoder_for(1024)
    try:
        received = feed(decoder, junk)
    except FrameError:
        return
    frames = [m.frame if isinstance(m, UndecodableFrame) else m for m in received]
    assert all(isinstance(m, dict) and isinstance(m["t"], str) for m in frames)


def test_a_large_frame_in_small_pieces_then_more_frames_in_the_last_piece() -> None:
    big = encode_frame({"t": "msg", "body": b"x" * 100_000})
    stream = big + encode_frame({"t": "a"}) + encode_frame({"t": "b"})[:3]
    decoder = FrameDecoder(MIB)
    cut = len(big) - 10
    for start in range(0, cut, 1000):
        assert feed(decoder, stream[start : min(start + 1000, cut)]) == []
    assert feed(decoder, stream[cut:]) == [{"t": "msg", "body": b"x" * 100_000}, {"t": "a"}]
    assert decoder.pending == 3  # a partial header waits for the rest
    assert feed(decoder, encode_frame({"t": "b"})[3:]) == [{"t": "b"}]
    assert decoder.pending == 0


def test_decode_stops_at_its_budget_and_limit() -> None:
    frames = [encode_frame({"t": "m", "b": b"x" * 1000}) for _ in range(100)]
    decoder = FrameDecoder(MIB)
    decoder.feed(b"".join(frames))
    first = decoder.decode(budget=10_000)
    assert 10 <= len(first) <= 11
    assert decoder.ready
    assert decoder.decode(limit=1) == [{"t": "m", "b": b"x" * 1000}]
    rest = []
    while decoder.ready:
        rest += decoder.decode(budget=10_000)
    assert len(first) + 1 + len(rest) == 100


def test_before_authentication_frames_are_tiny_and_values_small() -> None:
    assert PREAUTH.max_frame_size == 4096
    with pytest.raises(FrameError, match="frame of 4097 bytes exceeds the 4096 cap"):
        feed(FrameDecoder(PREAUTH), struct.pack(">I", 4097))
    for message in (
        {"t": "hello", "x": [None] * 17},
        {"t": "hello", "x": {str(i): 1 for i in range(17)}},
        {"t": "hello", "x": "y" * 1025},
        {"t": "hello", "x": b"y" * 1025},
    ):
        with pytest.raises(FrameError, match="undecodable"):
            feed(FrameDecoder(PREAUTH), encode_frame(message))


def test_limits_can_rise_between_two_frames() -> None:
    """Bytes that arrive with the last handshake message wait undecoded until the link
    raises the limits: a large first frame after it is not refused as pre-auth."""
    large = {"t": "snap", "b": b"z" * 10_000}
    decoder = FrameDecoder(PREAUTH)
    decoder.feed(encode_frame({"t": "welcome"}) + encode_frame(large))
    assert decoder.decode(limit=1) == [{"t": "welcome"}]
    decoder.limits = MIB
    assert decoder.decode() == [large]


def test_authenticated_limits_keep_containers_far_below_bytes() -> None:
    limits = FrameLimits.authenticated(16 * 1024 * 1024)
    assert limits.values == Limits(max_bytes=16 * 1024 * 1024, max_items=1024 * 1024)


def test_the_issues_bomb_is_refused_by_the_container_limit() -> None:
    """One array of 16,777,200 empty arrays: far more entries than max_items allows."""
    payload = msgpack.packb({"t": "hello", "x": [[]] * 16_777_200})
    decoder = decoder_for(16 * 1024 * 1024)
    with pytest.raises(FrameError, match="undecodable"):
        feed(decoder, struct.pack(">I", len(payload)) + payload)


def test_no_decode_call_takes_long_whatever_a_maximal_frame_holds() -> None:
    """Within the container limits, a 16 MiB frame of nothing but empty arrays. Each call
    decodes about one budget; none takes long (generous bound: the tight one is in bench/)."""
    inner = 1024 * 1024 - 16
    value = {"t": "hello", "x": [[[]] * inner for _ in range(6)]}
    payload = msgpack.packb(value)
    stream = struct.pack(">I", len(payload)) + payload
    decoder = decoder_for(16 * 1024 * 1024)
    worst, calls, got = 0.0, 0, []
    gc.disable()
    try:
        for start in range(0, len(stream), 256 * 1024):
            decoder.feed(stream[start : start + 256 * 1024])
            while True:
                began = time.perf_counter()
                got += decoder.decode()
                worst = max(worst, time.perf_counter() - began)
                calls += 1
                if not decoder.ready:
                    break
    finally:
        gc.enable()
    assert got == [value]
    assert calls >= len(stream) // SLICE
    assert worst < 0.1


def test_a_large_frame_that_may_hold_a_timestamp_is_searched_a_slice_per_call() -> None:
    """55039 packs as cd d6 ff, which starts like a timestamp: the whole value is searched,
    but in slices, each call bounded like a decoding one."""
    value = {"t": "m", "x": [55039] * 60_000}
    frame = encode_frame(value)
    decoder = decoder_for(1 << 20)
    decoder.feed(frame)
    calls, got = 0, []
    while True:
        got += decoder.decode(budget=SLICE)
        calls += 1
        if not decoder.ready:
            break
    assert got == [value]
    assert calls > len(frame) // SLICE + 1


# -- after authentication: what the sender packs, the receiver takes, or fails alone ---------


class Point:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x

    def __hash__(self) -> int:
        return hash(self.x)


def point_codec(decode: object = None) -> Codec:
    codec = Codec()
    codec.register(
        Point,
        42,
        lambda p: p.x.to_bytes(2, "big"),
        decode or (lambda data: Point(int.from_bytes(data, "big"))),  # type: ignore[arg-type]
    )
    return codec


def fail(data: bytes) -> Point:
    raise ValueError("no points today")


PAD = {"pad": b"p" * 3 * SLICE}
"""Added to a message to make its frame a large one (decoded in pieces)."""

keys = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda inner: st.lists(inner, max_size=3).map(tuple),
    max_leaves=6,
)
plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(keys, plain, max_size=4), st.booleans(), st.integers(1, 3 * SLICE))
def test_after_authentication_every_key_the_sender_packs_comes_back(
    body: dict[object, object], large: bool, read: int
) -> None:
    """Int, float, None, bool, bytes and tuple keys (msgpack carries a tuple as an array: it
    comes back a tuple), in small frames and in large ones decoded in pieces, however the
    stream arrives (a tuple key in a large frame decodes it again as more arrives)."""
    message = {"t": "msg", **(PAD if large else {}), "to": "x", "body": body}  # body last
    stream = encode_frame(message, Codec()) + encode_frame({"t": "next"})
    decoder = decoder_for(1 << 20)
    received = []
    for start in range(0, len(stream), read):
        received += feed(decoder, stream[start : start + read])
    assert received == [message, {"t": "next"}]
    assert decoder.pending == 0


def test_a_tuple_key_deep_in_a_large_frame_is_decoded_again_a_piece_per_call() -> None:
    """The first pass stops at the key, pieces in: the second decodes the kept pieces, each
    call about one SLICE, and the frames after it come out in order."""
    message = {"t": "msg", "body": [[b"y" * 30] * 100 for _ in range(100)] + [{(1, (2, 3)): 4}]}
    stream = encode_frame(message) + encode_frame({"t": "next"})
    decoder = decoder_for(1 << 20)
    decoder.feed(stream)
    calls, got = 0, []
    while True:
        got += decoder.decode(budget=SLICE)
        calls += 1
        if not decoder.ready:
            break
    assert got == [message, {"t": "next"}]
    assert calls >= 2 * (len(stream) // SLICE)  # every piece twice


@pytest.mark.parametrize("large", [False, True], ids=["small", "large"])
@pytest.mark.parametrize(
    ("body", "codec", "code", "text"),
    [
        (msgpack.ExtType(42, b"\x00\x01"), Codec(), "unknown_extension", "extension code 42"),
        (Point(7), point_codec(fail), "extension_failed", "raised ValueError: no points today"),
        ([1, msgpack.Timestamp(5, 0)], Codec(), "timestamp", "timestamp (extension -1)"),
        ({msgpack.Timestamp(5, 0): 1}, Codec(), "timestamp", "timestamp (extension -1)"),
        ({(1, msgpack.ExtType(42, b"")): 1}, Codec(), "unknown_extension", "code 42"),
    ],
    ids=["unknown code", "decoder raises", "timestamp", "timestamp key", "in a tuple key"],
)
def test_a_value_the_receiver_cannot_decode_fails_its_frame_only(
    body: object, codec: Codec, code: str, text: str, large: bool
) -> None:
    message = {"t": "call", "id": 3, "to": "echo", "body": body, **(PAD if large else {})}
    stream = encode_frame(message, point_codec()) + encode_frame({"t": "next"})
    first, second = feed(FrameDecoder(FrameLimits.authenticated(1 << 20), codec), stream)
    assert isinstance(first, UndecodableFrame)
    assert (first.problem.code, first.frame["t"], first.frame["id"]) == (code, "call", 3)
    assert text in first.problem.text
    assert second == {"t": "next"}


def test_a_value_the_receiver_cannot_decode_stands_as_a_placeholder() -> None:
    frame = encode_frame({"t": "msg", "to": "x", "body": [1, msgpack.ExtType(42, b"")]})
    (got,) = feed(decoder_for(1024), frame)
    assert isinstance(got, UndecodableFrame)
    assert got.frame["body"][0] == 1
    assert isinstance(got.frame["body"][1], Undecoded)
    assert got.frame["body"][1].code == 42


@pytest.mark.parametrize("large", [False, True], ids=["small", "large"])
def test_a_map_as_a_map_key_fails_its_frame_only(large: bool) -> None:
    """No Python sender can pack one (a dict is no key); another implementation can."""
    payload = b"".join(
        [
            b"\x84",  # a map of 4: t, to, body, pad
            *(msgpack.packb(item) for item in ("t", "msg", "to", "x", "body")),
            b"\x81\x80\x01",  # {{}: 1}
            msgpack.packb("pad"),
            msgpack.packb(PAD["pad"] if large else b""),
        ]
    )
    stream = struct.pack(">I", len(payload)) + payload + encode_frame({"t": "next"})
    first, second = feed(decoder_for(1 << 20), stream)
    assert isinstance(first, UndecodableFrame)
    assert first.problem.code == "map_key"
    assert "of type dict cannot be a key" in first.problem.text
    assert second == {"t": "next"}


@pytest.mark.parametrize(
    "message",
    [
        {"t": "hello", "x": {1: 2}},
        {"t": "hello", "x": {(1,): 2}},
        {"t": "hello", "x": msgpack.ExtType(42, b"")},
        {"t": "hello", "x": Point(1)},  # even one the codec knows a decoder of that raises
        {"t": "hello", "x": [msgpack.Timestamp(1, 0)]},
    ],
    ids=["int key", "tuple key", "unknown extension", "decoder raises", "timestamp"],
)
def test_before_authentication_decoding_stays_strict(message: dict[str, object]) -> None:
    frame = encode_frame(message, point_codec())
    with pytest.raises(FrameError, match=r"undecodable|extension type|bad Point"):
        feed(FrameDecoder(PREAUTH, point_codec(fail)), frame)
