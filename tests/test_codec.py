from __future__ import annotations

import contextlib
import pickle

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycluster.codec import DEFAULT_LIMITS, PROBLEMS, Codec, CodecError, Undecoded
from pycluster.registry.refs import ActorRef


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


def point_codec() -> Codec:
    codec = Codec()
    codec.register(
        Point,
        16,
        lambda p: msgpack.packb([p.x, p.y]),
        lambda data: Point(*msgpack.unpackb(data)),
    )
    return codec


def test_registered_types_round_trip() -> None:
    codec = point_codec()
    value = codec.unpack(codec.pack({"p": Point(1, 2), "n": [None, b"x"]}))
    assert (value["p"].x, value["p"].y, value["n"]) == (1, 2, [None, b"x"])


def test_unregistered_types_are_refused_both_ways() -> None:
    codec = Codec()
    with pytest.raises(TypeError, match="cannot send a Point: register it"):
        codec.pack(Point(1, 2))
    with pytest.raises(CodecError, match="unexpected msgpack extension type 16"):
        codec.unpack(point_codec().pack(Point(1, 2)))


def test_pickled_values_are_refused() -> None:
    with pytest.raises(TypeError, match="cannot send a ActorRef"):
        Codec().pack(ActorRef("a@b", "1"))
    forged = msgpack.packb(msgpack.ExtType(127, pickle.dumps(ActorRef("a@b", "1"))))
    with pytest.raises(CodecError, match="extension type 127"):
        Codec().unpack(forged)


def test_codes_are_checked() -> None:
    codec = point_codec()
    with pytest.raises(ValueError, match="already registered"):
        codec.register(Point, 17, lambda p: b"", lambda d: Point(0, 0))
    with pytest.raises(ValueError, match=r"not in 16\.\.126"):
        Codec().register(Point, 3, lambda p: b"", lambda d: Point(0, 0))


@given(st.binary(max_size=200))
def test_junk_raises_codec_error_only(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        point_codec().unpack(data)


def test_the_reused_packer_survives_a_failure_and_an_encoder_that_packs_too() -> None:
    """Codec.pack reuses one msgpack packer: a value it cannot encode leaves nothing behind
    for the next message, and an extension whose encoder packs with the same codec works."""
    codec = Codec()

    class Box:
        def __init__(self, inner: object) -> None:
            self.inner = inner

    codec.register(Box, 20, lambda box: codec.pack(box.inner), lambda data: Box(codec.unpack(data)))
    with pytest.raises(TypeError):
        codec.pack({"t": "msg", "body": [1, object()]})
    assert codec.unpack(codec.pack({"t": "msg", "body": 7})) == {"t": "msg", "body": 7}
    boxed = codec.unpack(codec.pack([Box({"a": [1, 2]})]))
    assert isinstance(boxed[0], Box)
    assert boxed[0].inner == {"a": [1, 2]}


def test_unpack_stays_strict_about_keys() -> None:
    """Codec.unpack decodes what a peer sends before it is authenticated: string keys only."""
    with pytest.raises(CodecError, match="undecodable"):
        Codec().unpack(Codec().pack({1: "x"}))


def test_a_reader_takes_every_key_the_codec_packs() -> None:
    codec = point_codec()
    value = {1: "a", -2.5: "b", None: "c", False: "d", b"k": "e", (1, ("x", b"y")): "f"}
    assert codec.reader().unpack(codec.pack(value), DEFAULT_LIMITS) == value


def test_a_reader_gives_back_what_it_cannot_decode_as_a_placeholder_and_says_why() -> None:
    def broken(data: bytes) -> Point:
        raise ValueError("x" * 1000)

    codec = Codec()
    codec.register(Point, 16, lambda p: b"", broken)
    reader = codec.reader()
    data = codec.pack([Point(1, 2), msgpack.ExtType(42, b""), "rest"])
    value = reader.unpack(data, None)
    assert [type(v) for v in value] == [Undecoded, Undecoded, str]
    assert [value[0].code, value[1].code, value[2]] == [16, 42, "rest"]
    assert reader.problem is not None  # the first reason is the one kept
    assert reader.problem.code == "extension_failed"
    assert reader.problem.text.startswith(
        "the Point decoder (extension code 16) raised ValueError: xxx"
    )
    assert len(reader.problem.text) < 400  # the decoder's message is cut
    reader.problem = None
    reader.unpack(codec.pack({"a": [1, {"b": msgpack.Timestamp(1, 0)}]}), None)
    assert reader.problem is not None
    assert reader.problem.code == "timestamp"
    assert reader.problem.code in PROBLEMS


@given(st.binary(max_size=200))
def test_a_reader_raises_codec_error_only(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        point_codec().reader().unpack(data, DEFAULT_LIMITS)
