"""What may travel between nodes: msgpack values, plus types registered here.

Only plain msgpack values cross the wire (None, booleans, numbers, strings, bytes, lists,
maps) and the types registered with :meth:`Codec.register`, each under a msgpack
extension code. Nothing is ever unpickled: a type that must travel is registered with an
explicit encoder and decoder, and msgpack's own timestamp extension (-1) is refused like
any unregistered one. Every decode is bounded by :class:`Limits`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import msgpack

T = TypeVar("T")

USER_CODES = range(16, 127)
"""Extension codes applications may register; lower codes belong to pycluster."""
# msgpack's timestamp extension starts d6 ff, d7 ff or c7 0c ff (fixext 4, fixext 8, ext 8
# of 12 bytes), and msgpack decodes it before any ext_hook sees it: a frame holding one of
# these byte sequences is searched for Timestamp values after decoding (UTF-8 text never
# holds 0xff, so only binary data and numbers can cause a needless search).


@attrs.frozen
class Limits:
    """How large the parts of one decoded value may be: ``max_bytes`` for a string, binary
    or extension, ``max_items`` for the entries of one array or map. msgpack refuses a
    longer one before allocating it."""

    max_bytes: int
    max_items: int
    _kwargs: dict[str, int] = attrs.field(init=False, eq=False, repr=False)

    @_kwargs.default
    def _unpacker_arguments(self) -> dict[str, int]:
        return {
            "max_str_len": self.max_bytes,
            "max_bin_len": self.max_bytes,
            "max_ext_len": self.max_bytes,
            "max_array_len": self.max_items,
            "max_map_len": self.max_items,
        }

    @classmethod
    def for_frames(cls, max_frame_size: int) -> Limits:
        """Limits for frames of at most ``max_frame_size`` bytes from an authenticated peer:
        containers hold far fewer entries than the frame has bytes."""
        return cls(max_bytes=max_frame_size, max_items=max(1024, max_frame_size // 16))

    def kwargs(self) -> dict[str, int]:
        """These limits as msgpack's unpacker arguments (made once: this is per frame)."""
        return self._kwargs


DEFAULT_LIMITS = Limits.for_frames(16 * 1024 * 1024)


class CodecError(ValueError):
    """A value could not be encoded or decoded."""


@attrs.frozen
class _Kind:
    cls: type[Any]
    code: int
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]


class Codec:
    """Encodes and decodes the values of messages between nodes."""

    def __init__(self) -> None:
        self._by_type: dict[type[Any], _Kind] = {}
        self._by_code: dict[int, _Kind] = {}
        # One packer, reused: msgpack.packb builds a new one per call, which costs more
        # than packing a small message. An extension's encoder that packs with this same
        # codec (re-entering it) gets a fresh one instead.
        self._packer = msgpack.Packer(use_bin_type=True, default=self._default)
        self._packing = False

    def register(
        self,
        cls: type[T],
        code: int,
        encode: Callable[[T], bytes],
        decode: Callable[[bytes], T],
        *,
        builtin: bool = False,
    ) -> None:
        """Let values of ``cls`` travel as extension ``code`` (16-126 for applications)."""
        if not builtin and code not in USER_CODES:
            raise ValueError(f"extension code {code} is not in {USER_CODES.start}..126")
        if code in self._by_code or cls in self._by_type:
            raise ValueError(f"{cls.__name__} or extension code {code} is already registered")
        kind = _Kind(cls, code, encode, decode)
        self._by_type[cls] = kind
        self._by_code[code] = kind

    def pack(self, value: Any) -> bytes:
        """``value`` as msgpack; TypeError for a type nobody registered."""
        if self._packing:
            nested: bytes = msgpack.packb(value, use_bin_type=True, default=self._default)
            return nested
        self._packing = True
        try:
            data: bytes = self._packer.pack(value)
        except BaseException:
            self._packer.reset()
            raise
        finally:
            self._packing = False
        return data

    def unpack(self, data: bytes, limits: Limits | None = DEFAULT_LIMITS) -> Any:
        """The value in ``data``; CodecError for bytes that are not a valid message.

        ``limits`` None leaves them to msgpack, which bounds every length by ``len(data)``:
        enough when ``data`` is no longer than the limits (and cheaper, per small frame).
        """
        try:
            if limits is None:
                value = msgpack.unpackb(
                    data, raw=False, strict_map_key=True, ext_hook=self._ext_hook, use_list=True
                )
            else:
                value = msgpack.unpackb(
                    data,
                    raw=False,
                    strict_map_key=True,
                    ext_hook=self._ext_hook,
                    use_list=True,
                    **limits.kwargs(),
                )
        except CodecError:
            raise
        except Exception as exc:  # msgpack raises several unrelated types for bad input
            raise CodecError(f"undecodable ({type(exc).__name__})") from None
        if may_hold_timestamp(data):
            refuse_timestamps(value)
        return value

    def unpacker(self, size: int, limits: Limits) -> msgpack.Unpacker:
        """A streaming unpacker for one value of ``size`` bytes fed in pieces (it resumes
        where the previous piece ended, so each piece costs only its own bytes)."""
        return msgpack.Unpacker(
            raw=False,
            strict_map_key=True,
            ext_hook=self._ext_hook,
            use_list=True,
            max_buffer_size=max(size, 1),
            **limits.kwargs(),
        )

    def _default(self, value: Any) -> msgpack.ExtType:
        kind = self._by_type.get(type(value))
        if kind is not None:
            return msgpack.ExtType(kind.code, kind.encode(value))
        raise TypeError(
            f"cannot send a {type(value).__name__}: register it with the node's codec "
            "(or send plain values)"
        )

    def _ext_hook(self, code: int, data: bytes) -> Any:
        kind = self._by_code.get(code)
        if kind is not None:
            try:
                return kind.decode(data)
            except Exception as exc:
                raise CodecError(f"bad {kind.cls.__name__} ({exc})") from None
        raise CodecError(f"unexpected msgpack extension type {code}")


def may_hold_timestamp(data: bytes) -> bool:
    """Whether ``data`` holds a byte sequence that starts a msgpack timestamp."""
    # Per frame: one search for 0xff (rare outside binary data) before the three markers.
    return b"\xff" in data and (
        b"\xd6\xff" in data or b"\xd7\xff" in data or b"\xc7\x0c\xff" in data
    )


def refuse_timestamps(value: Any) -> None:
    """Raise CodecError if ``value`` holds a msgpack Timestamp anywhere."""
    search_timestamps([value], budget=None)


def search_timestamps(stack: list[Any], budget: int | None) -> bool:
    """Look at up to ``budget`` values (all if None) of the ones ``stack`` holds and what
    they contain, popping them; CodecError at a Timestamp. True once none is left."""
    timestamp = msgpack.Timestamp
    while stack:
        if budget is not None:
            if budget <= 0:
                return False
            budget -= 1
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, timestamp):
            raise CodecError("unexpected msgpack extension type -1 (timestamp)")
    return True
