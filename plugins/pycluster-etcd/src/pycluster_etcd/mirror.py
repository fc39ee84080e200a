"""A local copy of every key under an etcd prefix, kept current by a watch.

Reads of the copy never touch the network. The copy is as of :attr:`Mirror.revision`:
every change up to that revision is in it, none after. When the watch breaks, it resumes
from ``revision + 1``, so nothing is missed; when etcd has compacted that history away
meanwhile, the copy is listed afresh and the differences are reported as changes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from typing import NamedTuple

from etcd3aio.errors import EtcdError
from etcd3aio.kv import prefix_range_end

from pycluster_etcd.client import FAILURES, EtcdClient, describe, unexpected

log = logging.getLogger("pycluster_etcd")


class Change(NamedTuple):
    """A key, its new value (None when the key was deleted), and the etcd revision of the
    change (of the listing, for changes found by listing again)."""

    key: bytes
    value: bytes | None
    revision: int


DELETE = 1
"""``mvccpb.Event.EventType.DELETE``."""
RETRY_FIRST = 0.2
RETRY_MAX = 2.0


def diff(old: Mapping[bytes, bytes], new: Mapping[bytes, bytes], revision: int) -> list[Change]:
    """The changes that turn ``old`` into ``new`` (as of ``revision``): deletions first,
    then puts."""
    changes = [Change(key, None, revision) for key in old if key not in new]
    changes.extend(
        Change(key, value, revision) for key, value in new.items() if old.get(key) != value
    )
    return changes


class Mirror:
    """Keys under ``prefix`` and their values, as of :attr:`revision`.

    ``on_change`` is called with each batch of changes, in revision order, after
    :attr:`items` has been updated.
    """

    def __init__(
        self,
        client: EtcdClient,
        prefix: bytes,
        *,
        what: str,
        on_change: Callable[[list[Change]], None],
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.what = what
        self.items: dict[bytes, bytes] = {}
        self.revision = 0
        """Every change up to this revision is in :attr:`items`."""
        self.loaded = asyncio.Event()
        """Set once the prefix has been listed."""
        self.relists = 0
        """How many times the prefix was listed again because the watch could not resume."""
        self.problem: str | None = None
        self._on_change = on_change
        self._range_end = prefix_range_end(prefix)
        self._must_list = True
        self._delay = RETRY_FIRST

    async def run(self) -> None:
        """List, then watch, until cancelled; resume (or list again) after failures."""
        while True:
            try:
                if self._must_list:
                    await self._list()
                await self._follow()
            except FAILURES as exc:
                problem = describe(exc)
                if self.problem is None:
                    log.info("%s: etcd watch interrupted (%s); resuming", self.what, problem)
                else:
                    log.debug("%s: etcd watch still interrupted (%s)", self.what, problem)
                self.problem = problem
            except Exception as exc:  # never stop watching: a copy that stops is stale forever
                self.problem = unexpected(f"{self.what}: etcd watch", exc, self.problem)
                self._must_list = True
            await asyncio.sleep(self._delay)
            self._delay = min(self._delay * 2, RETRY_MAX)

    async def _list(self) -> None:
        response = await self.client.request(
            functools.partial(
                self.client.kv.get, self.prefix, self._range_end, timeout=self.client.timeout
            )
        )
        fresh = {bytes(kv.key): bytes(kv.value) for kv in response.kvs}
        self.revision = int(response.header.revision)
        changes = diff(self.items, fresh, self.revision)
        self.items = fresh
        if self.loaded.is_set():
            self.relists += 1
        self._must_list = False
        self.loaded.set()
        if changes:
            self._on_change(changes)

    async def _follow(self) -> None:
        async for response in self.client.watch(self.prefix, self._range_end, self.revision + 1):
            if response.canceled and not response.compact_revision:
                reason = str(response.cancel_reason) or "no reason given"
                raise EtcdError(f"etcd cancelled the watch ({reason})")
            if response.compact_revision > 0:
                # The history from our revision is gone: start again from a fresh list.
                log.info(
                    "%s: etcd compacted the watched history (revision %d < %d); listing again",
                    self.what,
                    self.revision + 1,
                    response.compact_revision,
                )
                self._must_list = True
                return
            if response.created:
                self._delay = RETRY_FIRST
                if self.problem is not None:
                    log.info("%s: etcd watch resumed at revision %d", self.what, self.revision)
                    self.problem = None
                continue
            changes: list[Change] = []
            for event in response.events:
                key = bytes(event.kv.key)
                # A deletion's mod_revision is the revision of the deletion.
                revision = int(event.kv.mod_revision)
                if event.type == DELETE:
                    self.items.pop(key, None)
                    changes.append(Change(key, None, revision))
                else:
                    value = bytes(event.kv.value)
                    self.items[key] = value
                    changes.append(Change(key, value, revision))
                self.revision = max(self.revision, revision)
            if changes:
                self._on_change(changes)
