"""The ``etcd`` registry backend: names claimed in etcd, held by this node's lease.

Keys, under ``options.prefix`` (default ``/pycluster/registry/``):

- ``n/NAME`` -> ``["node", "actor id"]``: a registered name. Claimed with a transaction
  that creates the key only if it does not exist, so etcd (a Raft majority) arbitrates:
  exactly one claim wins, and a claim made after another one returned sees it.
- ``g/GROUP/NODE/ID`` -> the same ref: one member of a process group.

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
import json
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from etcd3aio.kv import KVService

from pycluster import ActorRef, ClaimFailed, RegistryBackend, Resolve
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


def encode_ref(ref: ActorRef) -> bytes:
    """A ref as stored in etcd."""
    return json.dumps([ref.node, ref.id]).encode()


def decode_ref(value: bytes) -> ActorRef | None:
    """A ref stored in etcd; None when the value is not one (written by something else)."""
    try:
        data = json.loads(value)
    except ValueError:
        return None
    if isinstance(data, list) and len(data) == 2 and all(isinstance(v, str) for v in data):
        return ActorRef(data[0], data[1])
    return None


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
        self._names: dict[str, ActorRef] = {}
        self._groups: dict[str, set[ActorRef]] = {}
        self._owned: dict[str, ActorRef] = {}
        """Names this node holds under its current lease."""
        self._claiming: set[tuple[str, ActorRef]] = set()
        self._ahead: dict[str, int] = {}
        """Names whose claim this node applied from etcd's answer, before the watch reported
        it: the revision of the claim."""
        self._joined: set[tuple[str, ActorRef]] = set()
        self._rejoin: set[tuple[str, ActorRef]] = set()
        """Memberships to put back under the next lease (the old one was given up)."""
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
        return self._names.get(name)

    def registered(self) -> dict[str, ActorRef]:
        return dict(self._names)

    def members(self, group: str) -> list[ActorRef]:
        return sorted(self._groups.get(group, ()))

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

    async def claim(self, name: str, ref: ActorRef, timeout: float) -> ActorRef | None:
        lease = self._usable_lease(f"claim {name!r}")
        key, value = self.keys.name(name), encode_ref(ref)
        deadline = time.monotonic() + timeout
        self._claiming.add((name, ref))
        try:
            while True:
                response = await self._claim_txn(key, value, lease, deadline - time.monotonic())
                if response.succeeded:
                    revision = int(response.header.revision)
                    break
                kv = response.responses[0].response_range.kvs[0]
                held, revision = bytes(kv.value), int(kv.mod_revision)
                holder = decode_ref(held)
                if holder is None:
                    raise ClaimFailed(f"claim of {name!r}: etcd holds something else under {key!r}")
                if holder == ref:
                    lease = int(kv.lease)  # an earlier attempt of this very claim got through
                    break
                if self._leftovers.get(key) != held:
                    self._names.setdefault(name, holder)
                    return holder
                # An earlier claim of this node whose answer never came (etcd stalled), and
                # whose actor is gone: it is no holder. Delete it, and claim again.
                await self._delete_if(key, held)
                if self._leftovers.get(key) == held:
                    del self._leftovers[key]
        except FAILURES as exc:
            self._leftover(key, value)  # it may have been written all the same
            raise ClaimFailed(f"claim of {name!r} in etcd failed: {describe(exc)}") from None
        finally:
            self._claiming.discard((name, ref))
        if self.lease.alive() != lease:
            # Fenced meanwhile: the name rides on a lease this node has given up.
            self._leftover(key, value)
            raise ClaimFailed(f"claim of {name!r}: the etcd lease was lost during the claim")
        self._owned[name] = ref
        self._names[name] = ref
        # Known here before the watch tells: changes it reports from before this revision
        # are older than what this node knows (see _name_changed).
        self._ahead[name] = revision
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

    async def release(self, name: str, ref: ActorRef) -> None:
        if self._owned.get(name) != ref:
            return
        del self._owned[name]
        if self._names.get(name) == ref:
            del self._names[name]
        if not self._stopping:  # else revoking the lease deletes it
            await self._delete(self.keys.name(name), encode_ref(ref))

    async def join(self, group: str, ref: ActorRef) -> None:
        lease = self._usable_lease(f"join {group!r}")
        key, value = self.keys.member(group, ref), encode_ref(ref)
        self._joined.add((group, ref))
        try:
            await self.client.request(
                lambda: self.client.kv.put(key, value, lease=lease, timeout=self.client.timeout)
            )
        except FAILURES as exc:
            self._joined.discard((group, ref))
            self._leftover(key, value)
            raise ClaimFailed(f"joining {group!r} in etcd failed: {describe(exc)}") from None
        self._groups.setdefault(group, set()).add(ref)

    async def leave(self, group: str, ref: ActorRef) -> None:
        self._joined.discard((group, ref))
        self._rejoin.discard((group, ref))
        self._drop_member(group, ref)
        if not self._stopping:
            await self._delete(self.keys.member(group, ref), encode_ref(ref))

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
            await self._delete_if(key, value)
        except FAILURES:
            self._leftover(key, value)

    async def _delete_if(self, key: bytes, value: bytes) -> None:
        await self.client.request(
            lambda: self.client.kv.txn(
                [KVService.txn_compare_value(key, value)],
                [KVService.txn_op_delete(key)],
                timeout=self.client.timeout,
            )
        )

    def _leftover(self, key: bytes, value: bytes) -> None:
        self._leftovers[key] = value
        self._dirty.set()

    # -- what etcd tells ------------------------------------------------------------------

    def _changed(self, changes: list[Change]) -> None:
        for key, value, revision in changes:
            name = self.keys.parse_name(key)
            if name is not None:
                ahead = self._ahead.get(name)
                if ahead is not None:
                    if revision < ahead:
                        continue  # older than the claim this node already applied
                    del self._ahead[name]  # the watch has caught up
                self._name_changed(name, key, value)
                continue
            member = self.keys.parse_member(key)
            if member is not None:
                self._member_changed(*member, key, value)

    def _name_changed(self, name: str, key: bytes, value: bytes | None) -> None:
        ref = None if value is None else decode_ref(value)
        if ref is None:
            self._names.pop(name, None)
        else:
            self._names[name] = ref
        mine = self._owned.get(name)
        if mine is not None and mine != ref and not self._stopping:
            # Our key went away without a release: its lease expired, or someone removed it.
            del self._owned[name]
            log.warning(
                "%s: name %r was removed from etcd (%s); stopping %s",
                self.node.name,
                name,
                "now held by " + str(ref) if ref else "lease expired",
                mine,
            )
            self.on_lost(name, mine, "lease expired")
        if (
            value is not None
            and ref is not None
            and ref.node == self.node.name
            and mine != ref
            and (name, ref) not in self._claiming
        ):
            self._leftover(key, value)  # ours, but no live claim of this node holds it

    def _member_changed(self, group: str, ref: ActorRef, key: bytes, value: bytes | None) -> None:
        if value is None:
            self._drop_member(group, ref)
            return
        self._groups.setdefault(group, set()).add(ref)
        if ref.node == self.node.name and (group, ref) not in self._joined:
            self._leftover(key, value)

    def _drop_member(self, group: str, ref: ActorRef) -> None:
        members = self._groups.get(group)
        if members is not None:
            members.discard(ref)
            if not members:
                del self._groups[group]

    # -- fencing and recovery ---------------------------------------------------------------

    def _fenced(self, reason: str) -> None:
        """The lease is given up: stop the actors whose names it held, now."""
        owned, self._owned = self._owned, {}
        self._rejoin |= self._joined
        for name, ref in owned.items():
            if self._names.get(name) == ref:
                del self._names[name]
            self.on_lost(name, ref, reason)
        if owned:
            log.warning("%s: stopped %d named actor(s): %s", self.node.name, len(owned), reason)

    def _wanted(self, key: bytes, value: bytes) -> bool:
        """Whether a leftover key is (again) a live claim or membership of this node."""
        ref = decode_ref(value)
        name = self.keys.parse_name(key)
        if name is not None:
            return ref is not None and (
                self._owned.get(name) == ref or (name, ref) in self._claiming
            )
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
            key = self.keys.member(group, ref)
            try:
                await self.client.request(
                    functools.partial(
                        self.client.kv.put, key, encode_ref(ref), lease, timeout=self.client.timeout
                    )
                )
            except FAILURES:
                return True
            self._rejoin.discard((group, ref))
            self._groups.setdefault(group, set()).add(ref)
        return False
