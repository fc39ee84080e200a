"""What may travel between nodes: msgpack values, plus types registered here.

Only plain msgpack values cross the wire (None, booleans, numbers, strings, bytes, lists,
maps) and the types registered with :meth:`Codec.register`, each under a msgpack
extension code. Nothing is ever unpickled: a type that must travel is registered with an
explicit encoder and decoder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import msgpack

T = TypeVar("T")

USER_CODES = range(16, 127)
"""Extension codes applications may register; lower codes belong to pycluster."""


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
        data: bytes = msgpack.packb(value, use_bin_type=True, default=self._default)
        return data

    def unpack(self, data: bytes) -> Any:
        """The value in ``data``; CodecError for bytes that are not a valid message."""
        try:
            return msgpack.unpackb(
                data, raw=False, strict_map_key=True, ext_hook=self._ext_hook, use_list=True
            )
        except CodecError:
            raise
        except Exception as exc:  # msgpack raises several unrelated types for bad input
            raise CodecError(f"undecodable ({type(exc).__name__})") from None

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
