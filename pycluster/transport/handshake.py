"""The cookie handshake, as a state machine with no I/O.

Both sides prove they know the cluster's cookie without sending it, the dialer first::

    dialer   -> acceptor   hello      vmin, v, name, to (the name it dialled), inc_d, nonce_d,
                                      hidden
    acceptor -> dialer     challenge  v (the version chosen), name, inc_a, nonce_a
    dialer   -> acceptor   proof      proof_d
    acceptor -> dialer     welcome    proof_a (sent once the node admits the connection; it
                                      may instead reject a duplicate)

Names cross the wire in their full form (:meth:`pycluster.nodename.NodeName.full`: the
port written out, each side filling in its own ``node.port``), and each side compares full
forms, so nodes with different ``node.port`` settings, or a client with another default
port, agree on who is who. :attr:`Handshake.peer` is the peer's name in this side's
canonical form.

``proof_x = HMAC-SHA256(key, transcript(x))`` over a transcript holding a role label, both
fresh random nonces, both names (exactly as they crossed the wire), both incarnations
(random per node process, so a restarted peer is told from a duplicate connection), the
versions offered and chosen, and the hidden flag.
``key`` is derived from the cookie with scrypt (:func:`cookie_key`), so a proof that an
impostor collects costs an offline guesser a memory-hard derivation per guess. Each side
checks the other's proof in constant time.

The acceptor proves nothing until the dialer's proof checks out: whoever connects to a
node's port learns nothing derived from the cookie. A recorded handshake cannot be
replayed (the other side's nonce is new every time), and one side's proof cannot be
reflected as the other's (the role label differs). The acceptor only answers a hello
addressed to its own name, and the dialer only accepts the name it dialled. An acceptor
may know several cookies (rotation): it accepts a proof made with any of them and answers
with that one; a dialer proves with its first. A side that detects a problem sends
``reject`` with a reason before closing, so both ends can log one clear line.

Versions are negotiated: the hello offers the range of protocol versions the dialer speaks
(``vmin`` to ``v``), the acceptor chooses the highest one both speak (or rejects with code
``version``), and the connection speaks it (:attr:`Handshake.version`). The offer is in the
transcript, so a man in the middle cannot talk two nodes down to an older version without
breaking the proofs.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from typing import Any, Literal

import msgpack

from pycluster.nodename import DEFAULT_PORT, NodeNameError, parse_node_name

PROTOCOL_VERSION = 2
"""The highest protocol version this release speaks. Version 2: the dialer proves first,
keys derived with scrypt, versions negotiated."""
PROTOCOL_VERSIONS = (2, PROTOCOL_VERSION)
"""The lowest and highest versions this release speaks. A release that changes the
protocol keeps speaking the previous version, so it can roll through a live cluster (see
docs/deploying.md)."""
NONCE_SIZE = 32
INCARNATION_SIZE = 16

Role = Literal["dialer", "acceptor"]


class HandshakeError(Exception):
    """The handshake failed; ``reason`` is safe to log (it never holds the cookie)."""

    def __init__(
        self,
        reason: str,
        *,
        kind: str = "protocol",
        tell_peer: bool = True,
        peer_code: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        """A short category for metrics: cookie, name, version, malformed, rejected, ..."""
        self.tell_peer = tell_peer
        self.peer_code = peer_code
        """For ``kind == "rejected"``: the code the peer gave (its own kind, or a refusal
        of the node such as ``duplicate`` or ``tie-break``), if it gave a known one."""

    def reject(self) -> dict[str, Any] | None:
        """The ``reject`` message to send before closing, if the peer should be told."""
        return reject(self.kind, self.reason) if self.tell_peer else None


def reject(code: str, reason: str) -> dict[str, Any]:
    """A ``reject`` message: a short ``code`` for programs, a ``reason`` for people."""
    return {"t": "reject", "code": code, "reason": reason}


@functools.lru_cache(maxsize=16)
def cookie_key(cookie: str) -> bytes:
    """The HMAC key of ``cookie`` (scrypt, about 50 ms and 16 MiB once per cookie and
    process; the salt is fixed, so every node derives the same key)."""
    return hashlib.scrypt(cookie.encode(), salt=b"pycluster-cookie-v2", n=2**14, r=8, p=1, dklen=32)


def _transcript(label: str, *parts: object) -> bytes:
    packed: bytes = msgpack.packb(
        ["pycluster-handshake", PROTOCOL_VERSION, label, *parts], use_bin_type=True
    )
    return packed


def _proof(key: bytes, transcript: bytes) -> bytes:
    return hmac.new(key, transcript, hashlib.sha256).digest()


class Handshake:
    """One side of a handshake. Feed it the peer's messages; send what it returns.

    ``keys`` are the cookie keys (:func:`cookie_key`) this side knows; the first is the
    one it proves with as a dialer. The dialer knows the name it dialled (``peer``); the
    acceptor learns it from the hello. When :attr:`done` is True the peer is
    authenticated as :attr:`peer`, of incarnation :attr:`peer_incarnation` (an acceptor
    is done once the dialer's proof checks out; the node then sends :meth:`welcome`).
    ``port`` is this side's ``node.port``: what a name without a port means to it. ``me``
    and ``peer`` may be written in any form; :attr:`peer` is then the canonical one.
    """

    def __init__(
        self,
        *,
        role: Role,
        me: str,
        keys: Sequence[bytes],
        peer: str | None = None,
        hidden: bool = False,
        incarnation: bytes = b"\x00" * INCARNATION_SIZE,
        port: int = DEFAULT_PORT,
        nonce: Callable[[int], bytes] = secrets.token_bytes,
        versions: tuple[int, int] = PROTOCOL_VERSIONS,
    ) -> None:
        if role == "dialer" and peer is None:
            raise ValueError("a dialer must know the name it dials")
        if not keys or not all(keys):
            raise ValueError("a handshake needs at least one cookie key")
        self.role = role
        self.me = me
        self.port = port
        self._me_full = str(parse_node_name(me).full(port))
        """This side's name as it sends it (and as it is in the transcript)."""
        self._peer_full = "" if peer is None else str(parse_node_name(peer).full(port))
        """The peer's name as this side expects it (the dialer: the name it dialled)."""
        self._peer_sent = ""
        """The peer's name exactly as it sent it (for the transcript)."""
        self.peer = None if peer is None else self._canonical(peer)
        """The peer's name, canonical for this side (the dialer: the one it dialled)."""
        self.hidden = hidden
        """Whether the dialer is a hidden node (a client such as ``pycluster status``)."""
        self.done = False
        self.incarnation = incarnation
        self.peer_incarnation = b""
        self._keys = tuple(keys)
        self._key = self._keys[0]
        """The key of this handshake: an acceptor's becomes the one the dialer used."""
        self._nonce = nonce(NONCE_SIZE)
        self._peer_nonce = b""
        self._expect = "hello" if role == "acceptor" else "challenge"
        self._versions = versions
        """The versions this side speaks, lowest and highest."""
        self._offer = versions if role == "dialer" else (0, 0)
        """The versions the dialer offered (as they crossed the wire)."""
        self.version = 0
        """The protocol version of the connection, once chosen."""

    def start(self) -> list[dict[str, Any]]:
        """Messages to send first: the dialer's hello, nothing for the acceptor."""
        if self.role == "acceptor":
            return []
        return [
            {
                "t": "hello",
                "vmin": self._versions[0],
                "v": self._versions[1],
                "name": self._me_full,
                "to": self._peer_full,
                "inc": self.incarnation,
                "nonce": self._nonce,
                "hidden": self.hidden,
            }
        ]

    def receive(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """Take the peer's next message; return the replies. Raises HandshakeError."""
        kind = message.get("t")
        if kind == "reject":
            reason, code = message.get("reason"), message.get("code")
            shown = reason if isinstance(reason, str) else "no reason given"
            raise HandshakeError(
                f"rejected by the peer: {shown[:200]}",
                kind="rejected",
                tell_peer=False,
                peer_code=code[:40] if isinstance(code, str) else None,
            )
        if self.done or kind != self._expect:
            raise HandshakeError(f"unexpected {str(kind)[:40]!r} during the handshake")
        if kind == "hello":
            return self._on_hello(message)
        if kind == "challenge":
            return self._on_challenge(message)
        if kind == "proof":
            return self._on_proof(message)
        return self._on_welcome(message)

    def _on_hello(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        self._offer = _offer(message)
        self.version = _choose(self._offer, self._versions)
        name, to = _field(message, "name", str), _field(message, "to", str)
        self._peer_nonce = _nonce_field(message)
        self.peer_incarnation = _incarnation_field(message)
        self.hidden = _field(message, "hidden", bool)
        if self._full(to) != self._me_full:
            raise HandshakeError(
                f"dialled as {to[:200]!r}, but this node is {self._me_full!r}", kind="name"
            )
        self._peer_full = self._full(name)
        if self._peer_full == self._me_full:
            raise HandshakeError("the peer claims this node's own name", kind="name")
        self._peer_sent = name
        self.peer = self._canonical(name)
        self._expect = "proof"
        return [
            {
                "t": "challenge",
                "v": self.version,
                "name": self._me_full,
                "inc": self.incarnation,
                "nonce": self._nonce,
            }
        ]

    def _on_challenge(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        chosen = message.get("v")
        low, high = self._versions
        if not (isinstance(chosen, int) and _is_version(chosen) and low <= chosen <= high):
            raise HandshakeError(
                f"the peer chose protocol version {str(chosen)[:20]}, not one of {low}-{high}",
                kind="version",
            )
        self.version = chosen
        name = _field(message, "name", str)
        if self._full(name) != self._peer_full:
            raise HandshakeError(
                f"dialled {self._peer_full!r}, but the peer is {name[:200]!r}", kind="name"
            )
        self._peer_sent = name
        self._peer_nonce = _nonce_field(message)
        self.peer_incarnation = _incarnation_field(message)
        if self._peer_nonce == self._nonce:
            raise HandshakeError("the peer echoed this node's nonce")
        self._expect = "welcome"
        return [{"t": "proof", "proof": _proof(self._key, self._transcript("dialer"))}]

    def _on_proof(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        proof = message.get("proof")
        if isinstance(proof, bytes):
            transcript = self._transcript("dialer")
            for key in self._keys:  # every one is tried: no timing tells which matched
                if hmac.compare_digest(proof, _proof(key, transcript)):
                    self._key = key
                    self.done = True
        if not self.done:
            raise HandshakeError("cookie mismatch", kind="cookie")
        # The node answers with welcome(), or a reject if the connection is a duplicate.
        return []

    def welcome(self) -> dict[str, Any]:
        """The acceptor's last message, once the node admits the connection: its proof."""
        if self.role != "acceptor" or not self.done:
            raise ValueError("only an acceptor that checked the dialer's proof welcomes")
        return {"t": "welcome", "proof": _proof(self._key, self._transcript("acceptor"))}

    def _on_welcome(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        proof = message.get("proof")
        expected = _proof(self._key, self._transcript("acceptor"))
        if not isinstance(proof, bytes) or not hmac.compare_digest(proof, expected):
            raise HandshakeError("cookie mismatch", kind="cookie")
        self.done = True
        return []

    def _full(self, name: str) -> str:
        """A name the peer sent, in full form; HandshakeError if it is not a node name."""
        try:
            return str(parse_node_name(name).full(self.port))
        except NodeNameError:
            raise HandshakeError(f"{name[:200]!r} is not a node name", kind="name") from None

    def _canonical(self, name: str) -> str:
        return str(parse_node_name(name).canonical(self.port))

    def _transcript(self, label: str) -> bytes:
        # The names as they crossed the wire: both sides hold the very same strings.
        mine = (self._me_full, self.incarnation, self._nonce)
        theirs = (self._peer_sent, self.peer_incarnation, self._peer_nonce)
        dialer, acceptor = (mine, theirs) if self.role == "dialer" else (theirs, mine)
        offer = (*self._offer, self.version)
        return _transcript(label, *dialer, *acceptor, self.hidden, *offer)


def _is_version(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**16


def _offer(hello: dict[str, Any]) -> tuple[int, int]:
    """The versions a hello offers, lowest and highest (``vmin`` defaults to ``v``)."""
    high = hello.get("v")
    low = hello.get("vmin", high)
    if not (isinstance(low, int) and isinstance(high, int)):
        low = high = None
    if low is None or high is None or not (_is_version(low) and _is_version(high)):
        raise HandshakeError(f"malformed version offer {str(hello.get('v'))[:20]}", kind="version")
    if low > high:
        raise HandshakeError(f"malformed version offer {low}-{high}", kind="version")
    return low, high


def _choose(offer: tuple[int, int], mine: tuple[int, int]) -> int:
    """The highest version in both ranges; HandshakeError (``version``) if there is none."""
    chosen = min(offer[1], mine[1])
    if chosen < max(offer[0], mine[0]):
        raise HandshakeError(
            f"protocol {_versions(offer)} is not supported (this node speaks {_versions(mine)})",
            kind="version",
        )
    return chosen


def _versions(span: tuple[int, int]) -> str:
    low, high = span
    return f"version {low}" if low == high else f"versions {low}-{high}"


def _field(message: dict[str, Any], key: str, kind: type[Any]) -> Any:
    value = message.get(key)
    if not isinstance(value, kind):
        raise HandshakeError(
            f"malformed handshake: {key!r} missing or of the wrong type", kind="malformed"
        )
    return value


def _incarnation_field(message: dict[str, Any]) -> bytes:
    incarnation = message.get("inc")
    if not isinstance(incarnation, bytes) or len(incarnation) != INCARNATION_SIZE:
        raise HandshakeError("malformed handshake: bad incarnation", kind="malformed")
    return incarnation


def _nonce_field(message: dict[str, Any]) -> bytes:
    nonce = message.get("nonce")
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
        raise HandshakeError("malformed handshake: bad nonce", kind="malformed")
    return nonce
