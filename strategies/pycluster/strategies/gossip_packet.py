"""Gossip heartbeats as bytes: how a node announces itself, and what a receiver accepts.

Sans-I/O: :class:`HeartbeatCodec` turns a node name into a datagram and a datagram into
either :class:`Heard` (a node to connect) or :class:`Rejected` (a reason to drop it). It
never touches a socket or a clock; the caller passes the time. Every check a stranger's
datagram meets lives here, so it is tested without a network.

Wire format, version 1: one msgpack array ``[MAGIC, VERSION, cluster_name, body]``.

- Without a secret, ``body`` is a map ``{"node": NODE_NAME}``: anyone who can send a
  datagram to the group can announce any name.
- With a secret, ``body`` is binary: a 12-byte random nonce, then the ChaCha20-Poly1305
  encryption of the msgpack map ``{"node": NODE_NAME, "sent": MILLISECONDS}`` (wall clock
  since the epoch). The key is derived from the secret with HKDF-SHA256, bound to the
  protocol and the cluster name; the associated data is the protocol label, the version and
  the cluster name, so none of them can be changed either. The receiver accepts a packet
  once, and only while its ``sent`` time is within :data:`REPLAY_WINDOW` of its own clock.

The cluster name travels in clear, so clusters sharing a group drop each other's packets
as "another cluster" rather than as forgeries. Decoding is msgpack with tight limits: no
extension types, no object hooks, short strings, tiny containers, a size cap.
"""

from __future__ import annotations

import enum
import heapq
import os
from collections.abc import Callable
from typing import Any

import attrs
import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pycluster import NodeNameError, parse_node_name

MAGIC = "pycluster-gossip"
"""First element of every heartbeat: tells ours apart from other traffic on the port."""
VERSION = 1
MAX_PACKET_SIZE = 1200
"""Largest datagram accepted (or sent): a heartbeat is about 100 bytes, and staying below
common MTUs keeps it in one IP fragment."""
NONCE_SIZE = 12
TAG_SIZE = 16
REPLAY_WINDOW = 60.0
"""Seconds a sealed heartbeat's ``sent`` time may differ from the receiver's clock."""
MAX_REMEMBERED = 65536
"""Nonces remembered at most; beyond, the window shrinks instead of forgetting too early."""

_KEY_SALT = b"pycluster gossip heartbeat"
_LIMITS: dict[str, Any] = {
    "raw": False,
    "strict_map_key": True,
    "use_list": True,
    "max_str_len": MAX_PACKET_SIZE,
    "max_bin_len": MAX_PACKET_SIZE,
    "max_array_len": 8,
    "max_map_len": 8,
    "max_ext_len": 0,
}


class Drop(enum.Enum):
    """Why a datagram was dropped. The value is the counter's key."""

    OVERSIZED = "oversized"
    MALFORMED = "malformed"
    VERSION = "version"
    OTHER_CLUSTER = "other_cluster"
    UNSEALED = "unsealed"
    SEALED = "sealed"
    FORGED = "forged"
    STALE = "stale"
    REPLAYED = "replayed"
    BAD_NAME = "bad_name"

    @property
    def description(self) -> str:
        """What happened, in an operator's words."""
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    Drop.OVERSIZED: f"larger than {MAX_PACKET_SIZE} bytes",
    Drop.MALFORMED: "not a pycluster heartbeat",
    Drop.VERSION: "a heartbeat of another protocol version",
    Drop.OTHER_CLUSTER: "a heartbeat of another cluster",
    Drop.UNSEALED: "not encrypted, but this topology has a secret",
    Drop.SEALED: "encrypted, but this topology has no secret",
    Drop.FORGED: "failed authentication (another secret, or altered on the way)",
    Drop.STALE: f"sent time more than {REPLAY_WINDOW:.0f}s from this node's clock",
    Drop.REPLAYED: "a copy of a heartbeat already received",
    Drop.BAD_NAME: "announces something that is not a node name",
}


@attrs.frozen
class Heard:
    """A valid heartbeat: ``node`` announced itself (canonical node name)."""

    node: str


@attrs.frozen
class Rejected:
    """A dropped datagram: the reason, and a detail for the log (never secret material)."""

    reason: Drop
    detail: str = ""


def derive_key(secret: str, cluster: str) -> bytes:
    """The 32-byte key of ``cluster``'s heartbeats: HKDF-SHA256 of the secret, salted with
    the protocol label and bound to the version and the cluster name."""
    info = f"{MAGIC} v{VERSION} cluster={cluster}".encode()
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_KEY_SALT, info=info)
    return hkdf.derive(secret.encode())


class ReplayGuard:
    """Accepts each nonce once, and only while its sent time is within ``window`` of now.

    Remembers at most ``capacity`` nonces: when full, the one sent earliest is forgotten
    and nothing sent at or before it is accepted any more, so forgetting never lets a
    replay in.
    """

    def __init__(self, window: float = REPLAY_WINDOW, capacity: int = MAX_REMEMBERED) -> None:
        self.window = window
        self.capacity = capacity
        self._by_time: list[tuple[float, bytes]] = []
        self._seen: set[bytes] = set()
        self._floor = float("-inf")

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, nonce: bytes, sent: float, now: float) -> Rejected | None:
        """None, and remember ``nonce``, if it is fresh and new; else why not."""
        while self._by_time and self._by_time[0][0] < now - self.window:
            _, old = heapq.heappop(self._by_time)
            self._seen.discard(old)
        if abs(now - sent) > self.window or sent <= self._floor:
            return Rejected(Drop.STALE, f"sent {sent - now:+.1f}s from this node's clock")
        if nonce in self._seen:
            return Rejected(Drop.REPLAYED)
        heapq.heappush(self._by_time, (sent, nonce))
        self._seen.add(nonce)
        if len(self._by_time) > self.capacity:
            earliest, forgotten = heapq.heappop(self._by_time)
            self._seen.discard(forgotten)
            self._floor = max(self._floor, earliest)
        return None


class HeartbeatCodec:
    """Encodes this cluster's heartbeats and checks received ones.

    ``secret`` None sends and accepts plain heartbeats; a secret seals them (and then only
    sealed, authentic, fresh, first-seen heartbeats of ``cluster`` are accepted).
    """

    def __init__(
        self,
        cluster: str,
        secret: str | None,
        *,
        guard: ReplayGuard | None = None,
        nonces: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.cluster = cluster
        self.guard = guard if guard is not None else ReplayGuard()
        self._aead = None if secret is None else ChaCha20Poly1305(derive_key(secret, cluster))
        self._nonces = nonces
        self._aad = f"{MAGIC}\x00{VERSION}\x00{cluster}".encode()

    @property
    def sealed(self) -> bool:
        """Whether heartbeats are encrypted and authenticated."""
        return self._aead is not None

    def encode(self, node: str, now: float) -> bytes:
        """The heartbeat announcing ``node``, sent at wall-clock time ``now`` (seconds)."""
        body: object
        if self._aead is None:
            body = {"node": node}
        else:
            nonce = self._nonces(NONCE_SIZE)
            plain = msgpack.packb({"node": node, "sent": int(now * 1000)}, use_bin_type=True)
            body = nonce + self._aead.encrypt(nonce, plain, self._aad)
        packet: bytes = msgpack.packb([MAGIC, VERSION, self.cluster, body], use_bin_type=True)
        if len(packet) > MAX_PACKET_SIZE:
            raise ValueError(f"a heartbeat for {node!r} would exceed {MAX_PACKET_SIZE} bytes")
        return packet

    def decode(self, data: bytes, now: float) -> Heard | Rejected:
        """Check a received datagram at wall-clock time ``now``. Never raises."""
        if len(data) > MAX_PACKET_SIZE:
            return Rejected(Drop.OVERSIZED, f"{len(data)} bytes")
        outer = _unpack(data)
        if not isinstance(outer, list) or len(outer) < 2 or outer[0] != MAGIC:
            return Rejected(Drop.MALFORMED)
        if type(outer[1]) is not int:
            return Rejected(Drop.MALFORMED)
        if outer[1] != VERSION:
            return Rejected(Drop.VERSION, f"version {outer[1]}, this node speaks {VERSION}")
        if len(outer) != 4 or not isinstance(outer[2], str):
            return Rejected(Drop.MALFORMED)
        _, _, cluster, body = outer
        if cluster != self.cluster:
            return Rejected(Drop.OTHER_CLUSTER, f"cluster {cluster[:64]!r}")
        if isinstance(body, bytes):
            return self._open(body, now)
        if not isinstance(body, dict):
            return Rejected(Drop.MALFORMED)
        if self._aead is not None:
            return Rejected(Drop.UNSEALED)
        if body.keys() != {"node"}:
            return Rejected(Drop.MALFORMED)
        return _heard(body["node"])

    def _open(self, body: bytes, now: float) -> Heard | Rejected:
        if self._aead is None:
            return Rejected(Drop.SEALED)
        if len(body) < NONCE_SIZE + TAG_SIZE:
            return Rejected(Drop.FORGED, "too short to be sealed")
        nonce, sealed = body[:NONCE_SIZE], body[NONCE_SIZE:]
        try:
            plain = self._aead.decrypt(nonce, sealed, self._aad)
        except InvalidTag:
            return Rejected(Drop.FORGED)
        # Authentic from here on: only a holder of the secret made it. It is still checked,
        # as one with a bug (or another pycluster version) may have made it.
        fields = _unpack(plain)
        if not isinstance(fields, dict) or fields.keys() != {"node", "sent"}:
            return Rejected(Drop.MALFORMED, "authentic, but not a heartbeat")
        sent = fields["sent"]
        if type(sent) is not int or not 0 <= sent < 2**53:
            return Rejected(Drop.MALFORMED, "authentic, but without a valid sent time")
        heard = _heard(fields["node"])
        if isinstance(heard, Rejected):
            return heard
        rejected = self.guard.admit(nonce, sent / 1000, now)
        return heard if rejected is None else rejected


def _unpack(data: bytes) -> object:
    try:
        return msgpack.unpackb(data, **_LIMITS)
    except ValueError:  # every msgpack decoding error (and UnicodeDecodeError) is one
        return None


def _heard(node: object) -> Heard | Rejected:
    if not isinstance(node, str):
        return Rejected(Drop.MALFORMED, "no node name")
    try:
        name = parse_node_name(node)
    except NodeNameError as exc:
        return Rejected(Drop.BAD_NAME, f"{node[:80]!r} ({exc})")
    return Heard(str(name))
