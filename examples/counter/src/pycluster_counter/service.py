"""The service's entry point, named by ``app:`` in counter.yaml.

``pycluster run`` calls :func:`app` with the started node once it is ready (with
``node.ready.min_peers``, once that many peers have merged). Every node of the service
tries to start the Counter: the registry arbitrates the claims, so exactly one node starts
it and the others get AlreadyStarted with its ref. Each node logs which of the two it got.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pycluster import AlreadyStarted, Node
from pycluster_counter.counter import NAME, Counter

log = logging.getLogger("pycluster_counter")


@asynccontextmanager
async def app(node: Node) -> AsyncIterator[None]:
    """Start the cluster's Counter unless a peer already runs it; entered at start and
    exited on SIGTERM, before the node leaves the cluster."""
    try:
        ref = await node.registry.spawn(NAME, Counter)
    except AlreadyStarted as exc:
        log.info("%s: spawn(%r) -> AlreadyStarted, running as %s", node.name, NAME, exc.ref)
    else:
        log.info("%s: spawn(%r) -> started as %s", node.name, NAME, ref)
    yield
    log.info("%s: counter service stopping", node.name)
