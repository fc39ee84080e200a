"""The ``etcd`` registry backend: names claimed in etcd, held by this node's lease.

Keys, under ``options.prefix`` (default ``/pycluster/registry/``):

- ``n/NAME`` -> msgpack ``[node, actor id]`` (``[node, actor id, meta]`` with metadata):
  a registered name. Claimed with a transaction that creates the key only if it does not
  exist, so etcd (a Raft majority) arbitrates: exactly one claim wins, and a claim made
  after another one returned sees it.
- ``g/GROUP/NODE/ID`` -> the same form: one member of a process group.

Only the actor's own node writes its keys (the registry forwards requests about another
node's actor there), so every key rides on the lease of the actor's node.

Each key is attached to this node's lease, so the keys of a node that dies or is cut off
from etcd expire ``lease_ttl`` seconds later. Every node watches the prefix and keeps a
copy (:class:`~pycluster_etcd.mirror.Mirror`): ``whereis`` and ``members`` read it without
touching the network, and keep answering from the last state while etcd is unreachable.

A node that cannot keep its lease alive stops its named actors (``on_lost``, reason
``lease lost``) before etcd can expire the lease and let anyone else claim their names
(see :mod:`pycluster_etcd.lease`). Claims fail with ClaimFailed until etcd answers again;
then the old lease is revoked, a new one granted, and group memberships are put back.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import msgpack
from etcd3aio.kv import KVService

from pycluster import (
    ActorRef,
    ClaimFailed,
    Joined,
    Left,
    NameConflict,
    Registered,
    Registration,
    RegistryBackend,
    Resolve,
    Unregistered,
)
from pycluster_etcd.client import FAILURES, EtcdClient, describe, transient, unexpected
from pycluster_etcd.lease import LeaseKeeper
from pycluster_etcd.mirror import Change, Mirror
from pycluster_etcd.options import EtcdRegistryOptions

if TYPE_CHECKING:
    from pycluster import Transport

log = logging.getLogger("pycluster_etcd")

DEFAULT_LEASE_TTL = 10
SWEEP_RETRY = 0.5
ATTEMPT = 1.0
"""Shortest time one attempt of a claim may take before the next is sent."""
RETRY_PAUSE = 0.05
STOP_TIMEOUT = 2.0


MAX_VALUE = 8192
"""Bytes of a value this backend reads (its own are a ref and at most 4 KiB of meta)."""


def encode_ref(ref: ActorRef, meta: Any = None) -> bytes:
    """A ref (and its registration's metadata) as stored in etcd."""
    data: list[Any] = [ref.node, ref.id] if meta is None else [ref.node, ref.id, meta]
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def decode_value(value: bytes) -> tuple[ActorRef, Any] | None:
    """A ref and metadata stored in etcd; None when the value is not one (written by
    something else)."""
    if len(value) > MAX_VALUE:
        return None
    try:
        data = msgpack.unpackb(value, raw=False, strict_map_key=False)
    except Exception:  # msgpack raises several unrelated types for bad input
        return None
    if (
        isinstance(data, list)
        and len(data) in (2, 3)
        and isinstance(data[0], str)
        and isinstance(data[1], str)
    ):
        return ActorRef(data[0], data[1]), (data[2] if len(data) == 3 else None)
    return None


def decode_ref(value: bytes) -> ActorRef | None:
    """A ref stored in etcd; None when the value is not one."""
    decoded = decode_value(value)
    return None if decoded is None else decoded[0]


def _part(text: str) -> str:
    return quote(text, safe="")


class Keys:
    """Where names and group members live under a prefix, and back."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.encode()
        self.names = (prefix + "n/").encode()
        self.groups = (prefix + "g/").encode()

    def name(self, name: str) -> bytes:
        """The key of a registered name."""
        return self.names + _part(name).encode()

    def member(self, group: str, ref: ActorRef) -> bytes:
        """The key of one group member."""
        return self.groups + "/".join(map(_part, (group, ref.node, ref.id))).encode()

    def parse_name(self, key: bytes) -> str | None:
        """The name a key registers, or None when it is not a name key."""
        if not key.startswith(self.names):
            return None
        return unquote(key[len(self.names) :].decode(errors="replace"))

    def parse_member(self, key: bytes) -> tuple[str, ActorRef] | None:
        """The group and member a key holds, or None when it is not a member key."""
        if not key.startswith(self.groups):
            return None
        parts = key[len(self.groups) :].decode(errors="replace").split("/")
        if len(parts) != 3:
            return None
        group, node, actor = map(unquote, parts)
        return group, ActorRef(node, actor)


class EtcdRegistry(RegistryBackend):
    """Names and groups in etcd: strongly consistent claims, local reads."""

    name = "etcd"
    Options = EtcdRegistryOptions
    forget_after = DEFAULT_LEASE_TTL + 1.0
    """A dead node's names go when its lease expires (set from ``lease_ttl`` per instance;
    a node that stops gracefully revokes its lease: its names go at once)."""

    def __init__(self, node: Transport, options: EtcdRegistryOptions, resolve: Resolve) -> None:
        super().__init__(node, options, resolve)
        self.forget_after = options.lease_ttl + 1.0
        self.keys = Keys(options.prefix)
        self.client = EtcdClient(options)
        what = f"{node.name} registry"
        self.lease = LeaseKeeper(
            self.client,
            options.lease_ttl,
            what=what,
            on_lost=self._fenced,
            on_granted=self._granted,
        )
        self.mirror = Mirror(self.client, self.keys.prefix, what=what, on_change=self._changed)
        self._names: dict[str, Registration] = {}
        self._groups: dict[str, dict[ActorRef, Any]] = {}
        self._owned: dict[str, bytes] = {}
        """Names this node holds under its current lease, and the value of each key."""
        self._claiming: set[tuple[str, bytes]] = set()
        self._updating: dict[str, bytes] = {}
        """Names whose metadata this node is replacing, and the new value."""
        self._ahead: dict[bytes, int] = {}
        """Keys this node changed and applied from etcd's answer, before the watch reported
        it: the revision of the change."""
        self._joined: dict[tuple[str, ActorRef], Any] = {}
        """This node's memberships, with their metadata."""
        self._rejoin: set[tuple[str, ActorRef]] = set()
        """Memberships to put back under the next lease (the old one was given up)."""
        self._reasons: dict[bytes, str] = {}
        """Why this node deleted a key, until the watch reports the deletion."""
        self._leftovers: dict[bytes, bytes] = {}
        """Keys to delete if they still hold that value: releases that could not reach
        etcd, claims whose outcome is unknown, and the names of this node's previous life."""
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, and wait (at most ``options.timeout``) for a lease and the first listing:
        a node whose etcd is down starts anyway, not ready until etcd answers."""
        await self.client.open()
        self._tasks = [
            asyncio.create_task(self.lease.run(), name=f"{self.node.name} etcd lease"),
            asyncio.create_task(self.mirror.run(), name=f"{self.node.name} etcd watch"),
            asyncio.create_task(self._sweep(), name=f"{self.node.name} etcd sweep"),
        ]
        try:
            async with asyncio.timeout(self.options.timeout):
                await asyncio.gather(self.lease.granted.wait(), self.mirror.loaded.wait())
        except TimeoutError:
            log.warning(
                "%s: etcd not reachable at %s yet (%s); claims fail until it is",
                self.node.name,
                ", ".join(self.options.endpoints),
                self.lease.problem or self.mirror.problem or "no answer",
            )

    async def stop(self) -> None:
        """Revoke the lease: etcd deletes every name and membership of this node at once."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.lease.revoke(STOP_TIMEOUT)
        await self.client.close()

    # -- reads ------------------------------------------------------------------------------

    def whereis(self, name: str) -> ActorRef | None:
        found = self._names.get(name)
        return None if found is None else found.ref

    def lookup(self, name: str) -> Registration | None:
        return self._names.get(name)

    def registered(self) -> dict[str, ActorRef]:
        return {name: found.ref for name, found in self._names.items()}

    def memberships(self, group: str) -> dict[ActorRef, Any]:
        return dict(self._groups.get(group, {}))

    def groups(self) -> list[str]:
        return sorted(self._groups)

    def synced(self) -> bool:
        """True once the registry has been read from etcd (it then stays true while etcd is
        unreachable: lookups answer from the last state, and pods stay ready)."""
        return self.mirror.loaded.is_set()

    def status(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "names": len(self._names),
            "synced": self.synced(),
            "etcd": self.lease.problem or "ok",
        }

    # -- claims -----------------------------------------------------------------------------

    async def claim(
        self, name: str, ref: ActorRef, timeout: float, meta: Any = None
    ) -> ActorRef | None:
        lease = self._usable_lease(f"claim {name!r}")
        key, value = self.keys.name(name), encode_ref(ref, meta)
        deadline = time.monotonic() + timeout
        self._claiming.add((name, value))
        try:
            while True:
                response = await self._claim_txn(key, value, lease, deadline - time.monotonic())
                if response.succeeded:
                    revision = int(response.header.revision)
                    break
                kv = response.responses[0].response_range.kvs[0]
                held, revision = bytes(kv.value), int(kv.mod_revision)
                holder = decode_value(held)
                if holder is None:
                    raise ClaimFailed(f"claim of {name!r}: etcd holds something else under {key!r}")
                if held == value:
                    lease = int(kv.lease)  # an earlier attempt of this very claim got through
                    break
                if self._leftovers.get(key) != held:
                    if name not in self._names:
                        self._set_name(name, Registration(name, *holder), "unregistered")
                    return holder[0]
                # An earlier claim of this node whose answer never came (etcd stalled), and
                # whose actor is gone: it is no holder. Delete it, and claim again.
                await self._delete_if(key, held)
                if self._leftovers.get(key) == held:
                    del self._leftovers[key]
        except FAILURES as exc:
            self._leftover(key, value)  # it may have been written all the same
            raise ClaimFailed(f"claim of {name!r} in etcd failed: {describe(exc)}") from None
        finally:
            self._claiming.discard((name, value))
        if self.lease.alive() != lease:
            # Fenced meanwhile: the name rides on a lease this node has given up.
            self._leftover(key, value)
            raise ClaimFailed(f"claim of {name!r}: the etcd lease was lost during the claim")
        self._owned[name] = value
        self._set_name(name, Registration(name, ref, meta), "unregistered")
        # Known here before the watch tells: changes it reports from before this revision
        # are older than what this node knows (see _changed).
        self._ahead[key] = revision
        return None

    async def _claim_txn(self, key: bytes, value: bytes, lease: int, timeout: float) -> Any:
        """Create ``key`` if absent (else read it), retrying within ``timeout`` while etcd
        does not answer: a request sent while the cluster elects a leader waits in vain,
        the next one reaches the new leader. Repeating the transaction is harmless."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            attempt = min(deadline - time.monotonic(), max(ATTEMPT, self.client.timeout / 2))
            try:
                return await self.client.request(
                    functools.partial(
                        self.client.kv.txn,
                        [KVService.txn_compare_create_revision(key, 0)],
                        [KVService.txn_op_put(key, value, lease=lease)],
                        [KVService.txn_op_get(key)],
                        timeout=max(attempt, 0.01),
                    )
                )
            except FAILURES as exc:
                if (
                    not transient(exc)
                    or deadline - time.monotonic() < RETRY_PAUSE
                    or self.lease.alive() != lease
                ):
                    raise
            await asyncio.sleep(RETRY_PAUSE)

    async def release(self, name: str, ref: ActorRef, reason: str = "unregistered") -> None:
        value = self._owned.get(name)
        if value is None or decode_ref(value) != ref:
            return
        del self._owned[name]
        self._set_name(name, None, reason)
        if not self._stopping:  # else revoking the lease deletes it
            key = self.keys.name(name)
            self._reasons[key] = reason
            await self._delete(key, value)

    async def update_meta(self, name: str, ref: ActorRef, meta: Any) -> bool:
        value = self._owned.get(name)
        if value is None or decode_ref(value) != ref:
            return False
        lease = self._usable_lease(f"update {name!r}")
        key, new = self.keys.name(name), encode_ref(ref, meta)
        self._updating[name] = new
        try:
            response = await self.client.request(
                lambda: self.client.kv.txn(
                    [KVService.txn_compare_value(key, value)],
                    [KVService.txn_op_put(key, new, lease=lease)],
                    [],
                    timeout=self.client.timeout,
                )
            )
        except FAILURES as exc:
            raise ClaimFailed(f"updating {name!r} in etcd failed: {describe(exc)}") from None
        finally:
            self._updating.pop(name, None)
        if not response.succeeded or self._owned.get(name) not in (value, new):
            return False
        self._owned[name] = new
        self._set_name(name, Registration(name, ref, meta), "unregistered")
        self._ahead[key] = int(response.header.revision)
        return True

    async def join(self, group: str, ref: ActorRef, meta: Any = None) -> None:
        lease = self._usable_lease(f"join {group!r}")
        key, value = self.keys.member(group, ref), encode_ref(ref, meta)
        self._joined[(group, ref)] = meta
        try:
            response = await self.client.request(
                lambda: self.client.kv.put(key, value, lease=lease, timeout=self.client.timeout)
            )
        except FAILURES as exc:
            self._joined.pop((group, ref), None)
            self._leftover(key, value)
            raise ClaimFailed(f"joining {group!r} in etcd failed: {describe(exc)}") from None
        self._ahead[key] = int(response.header.revision)
        self._set_member(group, ref, meta, present=True, reason="left")

    async def leave(self, group: str, ref: ActorRef, reason: str = "left") -> None:
        if (group, ref) not in self._joined:
            return
        meta = self._joined.pop((group, ref))
        self._rejoin.discard((group, ref))
        self._set_member(group, ref, None, present=False, reason=reason)
        if not self._stopping:
            key = self.keys.member(group, ref)
            self._reasons[key] = reason
            await self._delete(key, encode_ref(ref, meta))

    def _usable_lease(self, what: str) -> int:
        if self._stopping:
            raise ClaimFailed(f"cannot {what}: the registry is stopping")
        lease = self.lease.alive()
        if lease is None:
            reason = self.lease.problem or "no etcd lease yet"
            raise ClaimFailed(f"cannot {what}: etcd is not usable ({reason})")
        return lease

    async def _delete(self, key: bytes, value: bytes) -> None:
        """Delete ``key`` if it still holds ``value``; retried later if etcd does not answer."""
        try:
            revision = await self._delete_if(key, value)
        except FAILURES:
            self._leftover(key, value)
            return
        if revision is not None:
            self._ahead[key] = revision

    async def _delete_if(self, key: bytes, value: bytes) -> int | None:
        """Delete ``key`` if it still holds ``value``: the revision of the deletion, or
        None if it held something else."""
        response = await self.client.request(
            lambda: self.client.kv.txn(
                [KVService.txn_compare_value(key, value)],
                [KVService.txn_op_delete(key)],
                timeout=self.client.timeout,
            )
        )
        return int(response.header.revision) if response.succeeded else None

    def _leftover(self, key: bytes, value: bytes) -> None:
        self._leftovers[key] = value
        self._dirty.set()

    # -- what this node sees, and its events --------------------------------------------------

    def _set_name(self, name: str, found: Registration | None, reason: str) -> None:
        old = self._names.get(name)
        if found is None:
            if old is not None:
                del self._names[name]
                self.on_event(Unregistered(name, old.ref, reason))
            return
        self._names[name] = found
        if old is not None and old.ref != found.ref:
            self.on_event(NameConflict(name, found.ref, old.ref))
        if old is None or old.ref != found.ref or old.meta != found.meta:
            self.on_event(Registered(name, found.ref, found.meta))

    def _set_member(
        self, group: str, ref: ActorRef, meta: Any, *, present: bool, reason: str
    ) -> None:
        members = self._groups.get(group)
        if not present:
            if members is not None and ref in members:
                del members[ref]
                if not members:
                    del self._groups[group]
                self.on_event(Left(group, ref, reason))
            return
        members = self._groups.setdefault(group, {})
        if ref not in members or members[ref] != meta:
            members[ref] = meta
            self.on_event(Joined(group, ref, meta))

    # -- what etcd tells ------------------------------------------------------------------

    def _changed(self, changes: list[Change]) -> None:
        for key, value, revision in changes:
            ahead = self._ahead.get(key)
            if ahead is not None:
                if revision < ahead:
                    continue  # older than a change this node already applied
                del self._ahead[key]  # the watch has caught up
            name = self.keys.parse_name(key)
            if name is not None:
                self._name_changed(name, key, value)
                continue
            member = self.keys.parse_member(key)
            if member is not None:
                self._member_changed(*member, key, value)

    def _name_changed(self, name: str, key: bytes, value: bytes | None) -> None:
        decoded = None if value is None else decode_value(value)
        reason = self._reasons.pop(key, "unregistered") if value is None else "unregistered"
        self._set_name(name, None if decoded is None else Registration(name, *decoded), reason)
        mine = self._owned.get(name)
        if mine is not None and value is not None and value == self._updating.get(name):
            self._owned[name] = mine = value  # this node's update, reported before answered
        if mine is not None and mine != value and not self._stopping:
            # Our key went away without a release: its lease expired, or someone removed it.
            del self._owned[name]
            lost = decode_ref(mine)
            log.warning(
                "%s: name %r was removed from etcd (%s); stopping %s",
                self.node.name,
                name,
                "now held by " + str(decoded[0]) if decoded else "lease expired",
                lost,
            )
            if lost is not None:
                self.on_lost(name, lost, "lease expired")
        if (
            value is not None
            and decoded is not None
            and decoded[0].node == self.node.name
            and mine != value
            and (name, value) not in self._claiming
        ):
            self._leftover(key, value)  # ours, but no live claim of this node holds it

    def _member_changed(self, group: str, ref: ActorRef, key: bytes, value: bytes | None) -> None:
        if value is None:
            self._set_member(group, ref, None, present=False, reason=self._reasons.pop(key, "left"))
            return
        decoded = decode_value(value)
        self._set_member(
            group, ref, None if decoded is None else decoded[1], present=True, reason="left"
        )
        if ref.node == self.node.name and (group, ref) not in self._joined:
            self._leftover(key, value)

    # -- fencing and recovery ---------------------------------------------------------------

    def _fenced(self, reason: str) -> None:
        """The lease is given up: stop the actors whose names it held, now."""
        owned, self._owned = self._owned, {}
        self._rejoin |= set(self._joined)
        for name, value in owned.items():
            ref = decode_ref(value)
            found = self._names.get(name)
            if found is not None and found.ref == ref:
                self._set_name(name, None, reason)
            if ref is not None:
                self.on_lost(name, ref, reason)
        if owned:
            log.warning("%s: stopped %d named actor(s): %s", self.node.name, len(owned), reason)

    def _wanted(self, key: bytes, value: bytes) -> bool:
        """Whether a leftover key is (again) a live claim or membership of this node."""
        name = self.keys.parse_name(key)
        if name is not None:
            return self._owned.get(name) == value or (name, value) in self._claiming
        member = self.keys.parse_member(key)
        return member is not None and member in self._joined

    async def _granted(self, lease: int) -> None:
        self._dirty.set()  # put memberships back, clear leftovers

    async def _sweep(self) -> None:
        """Delete leftovers and put memberships back under the current lease, retrying
        while etcd does not answer."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                failed = await self._sweep_once()
            except Exception as exc:  # leftovers stay until the next round
                unexpected(f"{self.node.name} registry: etcd sweep", exc, None)
                failed = True
            if failed:
                await asyncio.sleep(SWEEP_RETRY)
                self._dirty.set()

    async def _sweep_once(self) -> bool:
        """One round of :meth:`_sweep`; True when something must be tried again."""
        for key, value in list(self._leftovers.items()):
            if self._wanted(key, value):
                del self._leftovers[key]  # claimed or joined again since: it stays
                continue
            try:
                await self._delete_if(key, value)
            except FAILURES:
                return True
            if self._leftovers.get(key) == value:
                del self._leftovers[key]
        lease = self.lease.alive()
        for group, ref in list(self._rejoin):
            if lease is None:
                return True
            if (group, ref) not in self._joined:
                self._rejoin.discard((group, ref))
                continue
            meta = self._joined[(group, ref)]
            key = self.keys.member(group, ref)
            try:
                await self.client.request(
                    functools.partial(
                        self.client.kv.put,
                        key,
                        encode_ref(ref, meta),
                        lease,
                        timeout=self.client.timeout,
                    )
                )
            except FAILURES:
                return True
            self._rejoin.discard((group, ref))
            self._set_member(group, ref, meta, present=True, reason="left")
        return False
