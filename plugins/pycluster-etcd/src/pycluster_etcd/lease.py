"""A node's etcd lease: kept alive, and given up *before* etcd can expire it.

etcd expires a lease ``ttl`` seconds after it last heard a keepalive for it. It heard that
keepalive no earlier than the moment it was sent, so a lease whose last acknowledged
keepalive was sent at ``t`` (by the monotonic clock) lives on etcd at least until
``t + ttl``. :class:`Fence` turns that into a deadline ``margin`` seconds earlier; when it
passes without a newer acknowledgement, :class:`LeaseKeeper` declares the lease lost
(fencing: the owner stops what the lease protected) while etcd still holds it, so nobody
else can have claimed its keys yet. Then it revokes the old lease as soon as etcd answers
and grants a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable

import attrs
from etcd3aio.errors import EtcdError

from pycluster_etcd.client import FAILURES, EtcdClient, describe, lease_not_found, unexpected

log = logging.getLogger("pycluster_etcd")

RETRY_FIRST = 0.2
RETRY_MAX = 2.0


def margin_for(ttl: float) -> float:
    """The safety margin of a lease of ``ttl`` seconds: time left, after fencing, for the
    owner to stop its actors and for the event loop to be late, before etcd could expire
    the lease."""
    return max(0.5, ttl / 5)


def keepalive_interval(ttl: float) -> float:
    """Seconds between keepalives: several chances before the fence deadline."""
    return ttl / 5


@attrs.define
class Fence:
    """The latest moment (``time.monotonic()``) a lease is surely alive on etcd, minus a
    safety margin: ``ttl - margin`` after the last acknowledged keepalive was *sent*.

    A pure calculation; :class:`LeaseKeeper` feeds it.
    """

    ttl: float
    margin: float
    acked_sent: float | None = None
    """When the last keepalive (or the grant) that etcd acknowledged was sent."""

    def acknowledge(self, sent: float) -> None:
        """etcd acknowledged a keepalive (or the grant) sent at ``sent``."""
        if self.acked_sent is None or sent > self.acked_sent:
            self.acked_sent = sent

    def deadline(self) -> float | None:
        """When the lease must be given up; None before any acknowledgement."""
        if self.acked_sent is None:
            return None
        return self.acked_sent + self.ttl - self.margin

    def holds(self, now: float) -> bool:
        """Whether the lease is still surely alive at ``now``."""
        deadline = self.deadline()
        return deadline is not None and now < deadline

    def reset(self) -> None:
        """Forget the acknowledgements (a new lease starts)."""
        self.acked_sent = None


class LeaseKeeper:
    """Grants a lease, keeps it alive, fences it, and replaces it once etcd is back.

    ``on_lost(reason)`` is called (synchronously, from a timer) when the lease must be
    considered gone; ``on_granted(lease_id)`` is awaited after each new lease is granted.
    Without ``fencing``, the lease is only replaced once etcd says it has expired (for
    keys that guard nothing exclusive, like a discovery entry).
    """

    def __init__(
        self,
        client: EtcdClient,
        ttl: int,
        *,
        what: str,
        on_lost: Callable[[str], None],
        on_granted: Callable[[int], Awaitable[None]] | None = None,
        fencing: bool = True,
    ) -> None:
        self.client = client
        self.fencing = fencing
        self.ttl = ttl
        self.what = what
        self.fence = Fence(float(ttl), margin_for(ttl))
        self.lease_id: int | None = None
        self.problem: str | None = None
        """Why etcd cannot be used right now (None while it answers)."""
        self.granted = asyncio.Event()
        """Set while a lease is held."""
        self._on_lost = on_lost
        self._on_granted = on_granted
        self._stale: list[int] = []
        self._timer: asyncio.TimerHandle | None = None
        self._last_sent = 0.0

    def alive(self) -> int | None:
        """The lease id while the lease is surely alive (without fencing: while etcd has
        not said it expired), else None."""
        if not self.fencing:
            return self.lease_id
        if self.lease_id is None or not self.fence.holds(time.monotonic()):
            return None
        return self.lease_id

    async def run(self) -> None:
        """Hold a lease until cancelled."""
        delay = RETRY_FIRST
        try:
            while True:
                try:
                    if self.lease_id is None:
                        try:
                            await self._grant()
                        except FAILURES as exc:
                            self._trouble(exc)
                            await asyncio.sleep(delay)
                            delay = min(delay * 2, RETRY_MAX)
                            continue
                        delay = RETRY_FIRST
                        if self._on_granted is not None and self.lease_id is not None:
                            await self._on_granted(self.lease_id)
                    wait = self._last_sent + keepalive_interval(self.ttl) - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    await self._keepalive()
                except Exception as exc:  # keep the lease, or fence it: never just stop
                    self.problem = unexpected(f"{self.what}: etcd lease", exc, self.problem)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
        finally:
            self._disarm()

    async def revoke(self, timeout: float) -> None:
        """Give the lease (and any replaced one) up now: etcd deletes their keys. Waits
        at most ``timeout`` seconds in all; what etcd did not hear of, it expires."""
        leases = [*self._stale, *([self.lease_id] if self.lease_id is not None else [])]
        self.lease_id = None
        self._stale = []
        self.granted.clear()
        self._disarm()
        deadline = time.monotonic() + timeout
        for lease in leases:
            left = deadline - time.monotonic()
            if left <= 0:
                break  # etcd will expire it
            with contextlib.suppress(*FAILURES):
                await self.client.request(
                    functools.partial(self.client.lease.revoke, lease, timeout=left)
                )

    # -- the steps --------------------------------------------------------------------------

    async def _grant(self) -> None:
        for stale in list(self._stale):
            # The replaced lease may still be alive on etcd, holding keys of actors that
            # were stopped when it was fenced: revoke it before working under a new one.
            try:
                await self.client.request(
                    functools.partial(self.client.lease.revoke, stale, timeout=self.client.timeout)
                )
            except FAILURES as exc:
                if not lease_not_found(exc):
                    raise
            self._stale.remove(stale)
        sent = time.monotonic()
        response = await self.client.request(
            lambda: self.client.lease.grant(self.ttl, timeout=self.client.timeout)
        )
        self.lease_id = int(response.ID)
        self._last_sent = sent
        self.fence.reset()
        self.fence.acknowledge(sent)
        self._arm()
        self.granted.set()
        self._recovered()
        log.debug("%s: etcd lease %x granted (ttl %ss)", self.what, self.lease_id, self.ttl)

    async def _keepalive(self) -> None:
        lease = self.lease_id
        deadline = self.fence.deadline()
        if lease is None or deadline is None:
            return
        sent = time.monotonic()
        self._last_sent = sent
        # Never wait past the fence (the lease is given up by then), nor so long that no
        # other attempt fits before it: the next one may reach another etcd member.
        budget = min(self.client.timeout, 2 * keepalive_interval(self.ttl))
        if self.fencing:
            budget = max(0.05, min(budget, deadline - sent))
        try:
            async with asyncio.timeout(budget):
                ttl = await self.client.request(lambda: self._keepalive_call(lease))
        except FAILURES as exc:
            self._trouble(exc)
            return
        if lease != self.lease_id:
            return  # lost (fenced) while waiting
        if ttl <= 0:
            self._lose("lease expired")
            return
        self.fence.acknowledge(sent)
        self._arm()
        self._recovered()

    async def _keepalive_call(self, lease: int) -> int:
        """One keepalive on its own stream: the TTL etcd answers (0: the lease is gone)."""
        call = self.client.lease.keep_alive(lease)
        try:
            async for response in call:
                return int(response.TTL)
        finally:
            call.cancel()
        raise EtcdError("etcd closed the keepalive stream without an answer")

    # -- fencing ----------------------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        deadline = self.fence.deadline()
        if deadline is not None and self.fencing:
            # loop.time() is time.monotonic(): the deadline is on the loop's clock.
            self._timer = asyncio.get_running_loop().call_at(deadline, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self.lease_id is not None and not self.fence.holds(time.monotonic()):
            self._lose("lease lost")

    def _lose(self, reason: str) -> None:
        lease = self.lease_id
        if lease is None:
            return
        self.lease_id = None
        self._stale.append(lease)
        self.granted.clear()
        self._disarm()
        acked = self.fence.acked_sent
        since = time.monotonic() - acked if acked is not None else float("nan")
        log.warning(
            "%s: %s: etcd lease %x given up %.2fs after its last acknowledged keepalive "
            "was sent (ttl %ss)%s",
            self.what,
            reason,
            lease,
            since,
            self.ttl,
            f"; etcd: {self.problem}" if self.problem else "",
        )
        self._on_lost(reason)

    # -- reporting --------------------------------------------------------------------------

    def _trouble(self, exc: BaseException) -> None:
        if lease_not_found(exc):
            self._lose("lease expired")
            return
        problem = describe(exc)
        if self.problem is None:
            log.warning("%s: cannot use etcd: %s", self.what, problem)
        elif problem != self.problem:
            # Still failing, differently: not news for an operator.
            log.debug("%s: cannot use etcd: %s", self.what, problem)
        self.problem = problem

    def _recovered(self) -> None:
        if self.problem is not None:
            log.info("%s: etcd reachable again (was: %s)", self.what, self.problem)
            self.problem = None
