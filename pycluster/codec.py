"""What may travel between nodes: msgpack values, plus types registered here.

Only plain msgpack values cross the wire (None, booleans, numbers, strings, bytes, lists,
maps) and the types registered with :meth:`Codec.register`, each under a msgpack
extension code. Nothing is ever unpickled: a type that must travel is registered with an
explicit encoder and decoder, and msgpack's own timestamp extension (-1) is refused like
any unregistered one. Every decode is bounded by :class:`Limits`.

:meth:`Codec.unpack` is strict (string keys only; a value it cannot decode fails the
whole): what a peer sends before it is authenticated is decoded so. What an authenticated
peer sends is decoded by a :class:`Reader`: any map key the sender could pack, and a value
it cannot decode (an extension code nobody registered here, a decoder that raised, a
timestamp) is a :class:`Problem` of that one message, not of the bytes around it.
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
class Problem:
    """Why a :class:`Reader` could not decode part of a value whose bytes are sound msgpack.

    ``code`` is one of :data:`PROBLEMS` (for metrics and decisions), ``text`` says it for
    people, e.g. ``unknown extension code 42``.
    """

    code: str
    text: str


PROBLEMS = ("unknown_extension", "extension_failed", "timestamp", "map_key")
"""Every :attr:`Problem.code`: an extension code this node did not register, an extension
decoder that raised, a msgpack timestamp (refused by design), a map key no Python map can
hold (a map as a key, from a peer that is not pycluster)."""
MAX_PROBLEM_TEXT = 300
"""Characters of an extension decoder's error kept in a :class:`Problem`."""


class Undecoded:
    """What a :class:`Reader` puts where it could not decode a value (its
    :attr:`Reader.problem` says why). Each is its own object, hashable by identity, so it
    can stand for a map key too."""

    __slots__ = ("code",)

    def __init__(self, code: int | None) -> None:
        self.code = code
        """The extension code of the value it replaces (None for a map key)."""

    def __repr__(self) -> str:
        return f"Undecoded({self.code})"


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
        """Let values of ``cls`` travel as extension ``code`` (16-126 for applications).

        Every node must register the same class under the same code: a node that did not
        cannot decode the value, and only the message holding it fails (see ``Reader``).
        """
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

        Strict, as for what a peer sends before it is authenticated: map keys are strings
        (or bytes) only, and a value it cannot decode fails the whole (a :class:`Reader`
        decodes what an authenticated peer sends). ``limits`` None leaves them to msgpack,
        which bounds every length by ``len(data)``: enough when ``data`` is no longer than
        the limits (and cheaper, per small frame).
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

    def reader(self) -> Reader:
        """A :class:`Reader` over this codec's types (one per stream: it keeps state)."""
        return Reader(self)

    def _default(self, value: Any) -> msgpack.ExtType:
        kind = self._by_type.get(type(value))
        if kind is not None:
            return msgpack.ExtType(kind.code, kind.encode(value))
        if isinstance(value, int):  # msgpack hands over the ints it cannot pack
            raise TypeError(f"cannot send the int {value}: msgpack carries 64 bits at most")
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


class Reader:
    """Decodes what an authenticated peer sends, so that one value it cannot decode fails
    that message only.

    Unlike :meth:`Codec.unpack`: map keys may be anything the sender could pack (numbers,
    None, booleans, bytes, registered types; a tuple key, which msgpack carries as an
    array, comes back a tuple); and where a part cannot be decoded (see :data:`PROBLEMS`),
    an :class:`Undecoded` takes its place and :attr:`problem` says why, the first such
    part's reason. Bytes that are not one msgpack value within the limits still raise
    CodecError: the stream itself is then broken.

    Not re-entrant across values: one reader per stream, whose values are decoded one
    after the other (a large one in pieces, see :meth:`unpacker`).
    """

    def __init__(self, codec: Codec) -> None:
        self._codec = codec
        self.problem: Problem | None = None
        """Why the last value could not be decoded whole (None: it was); the caller resets
        it once read."""

    def unpack(self, data: bytes, limits: Limits | None) -> Any:
        """The value in ``data`` (see the class doc; ``limits`` as for Codec.unpack)."""
        try:
            if limits is None:
                value = msgpack.unpackb(
                    data, raw=False, strict_map_key=False, ext_hook=self._ext_hook, use_list=True
                )
            else:
                value = msgpack.unpackb(
                    data,
                    raw=False,
                    strict_map_key=False,
                    ext_hook=self._ext_hook,
                    use_list=True,
                    **limits.kwargs(),
                )
        except TypeError:
            # A map key msgpack made a list (a tuple on the sender), or a map: decode again,
            # building each map here (twice as slow, so only now).
            value = self._unpack_building_maps(data, limits)
        except Exception as exc:  # msgpack raises several unrelated types for bad input
            raise CodecError(f"undecodable ({type(exc).__name__})") from None
        if may_hold_timestamp(data):
            self.check_timestamps(value)
        return value

    def _unpack_building_maps(self, data: bytes, limits: Limits | None) -> Any:
        self.problem = None  # the first pass stopped midway: this one finds it all again
        try:
            return msgpack.unpackb(
                data,
                raw=False,
                strict_map_key=False,
                ext_hook=self._ext_hook,
                object_pairs_hook=self._pairs,
                use_list=True,
                **(limits or _NO_LIMITS).kwargs(),
            )
        except Exception as exc:
            raise CodecError(f"undecodable ({type(exc).__name__})") from None

    def unpacker(self, size: int, limits: Limits, *, keys_as_tuples: bool) -> msgpack.Unpacker:
        """A streaming unpacker like :meth:`Codec.unpacker`, decoding as :meth:`unpack`
        does: on its first pass a tuple key raises TypeError (``keys_as_tuples`` False);
        a second pass over the same bytes (True) builds each map itself and takes it."""
        return msgpack.Unpacker(
            raw=False,
            strict_map_key=False,
            ext_hook=self._ext_hook,
            object_pairs_hook=self._pairs if keys_as_tuples else None,
            use_list=True,
            max_buffer_size=max(size, 1),
            **limits.kwargs(),
        )

    def check_timestamps(self, value: Any) -> None:
        """Set :attr:`problem` if ``value`` holds a msgpack timestamp (refused by design)."""
        try:
            refuse_timestamps(value)
        except CodecError:
            self.failed(TIMESTAMP_REFUSED)

    def failed(self, problem: Problem) -> None:
        """Note ``problem`` unless one is noted already (the first reason is the one told)."""
        if self.problem is None:
            self.problem = problem

    def _ext_hook(self, code: int, data: bytes) -> Any:
        kind = self._codec._by_code.get(code)
        if kind is None:
            self.failed(Problem("unknown_extension", f"unknown extension code {code}"))
            return Undecoded(code)
        try:
            return kind.decode(data)
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"[:MAX_PROBLEM_TEXT]
            self.failed(
                Problem(
                    "extension_failed",
                    f"the {kind.cls.__name__} decoder (extension code {code}) raised {detail}",
                )
            )
            return Undecoded(code)

    def _pairs(self, pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
        try:
            return dict(pairs)
        except TypeError:
            pass
        built: dict[Any, Any] = {}
        for key, value in pairs:
            key = _hashable(key)
            try:
                built[key] = value
            except TypeError:
                self.failed(
                    Problem("map_key", f"a map key of type {type(key).__name__} cannot be a key")
                )
                built[Undecoded(None)] = value
        return built


_NO_LIMITS = Limits(max_bytes=2**32 - 1, max_items=2**32 - 1)
"""No limits but msgpack's own (each length bounded by the bytes given)."""
TIMESTAMP_REFUSED = Problem("timestamp", "a msgpack timestamp (extension -1) is refused")
"""The problem of a value holding a msgpack timestamp."""


def _hashable(key: Any) -> Any:
    """A map key as the sender had it: msgpack carries a tuple as an array, decoded as a
    list; lists inside it were tuples too."""
    if type(key) is list:
        return tuple(_hashable(item) for item in key)
    return key


def may_hold_timestamp(data: bytes) -> bool:
    """Whether ``data`` holds a byte sequence that starts a msgpack timestamp."""
    # Per frame: one search for 0xff (rare outside binary data) before the three markers.
    # An int, and find() for the markers: ``bytes in bytes`` first tries the operand as an
    # integer, raising and clearing a TypeError each time (six times the cost).
    return 0xFF in data and (
        data.find(b"\xd6\xff") >= 0
        or data.find(b"\xd7\xff") >= 0
        or data.find(b"\xc7\x0c\xff") >= 0
    )


def refuse_timestamps(value: Any) -> None:
    """Raise CodecError if ``value`` holds a msgpack Timestamp anywhere."""
    search_timestamps([value], budget=None)


def search_timestamps(stack: list[Any], budget: int | None) -> bool:
    """Look at up to ``budget`` values (all if None) of the ones ``stack`` holds and what
    they contain, popping them; CodecError at a Timestamp. True once none is left."""
    timestamp = msgpack.Timestamp
    sequence = (list, tuple)  # a tuple only as a map key
    while stack:
        if budget is not None:
            if budget <= 0:
                return False
            budget -= 1
        item = stack.pop()
        if isinstance(item, sequence):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item)  # keys: after authentication, they may be timestamps too
            stack.extend(item.values())
        elif isinstance(item, timestamp):
            raise CodecError("unexpected msgpack extension type -1 (timestamp)")
    return True
