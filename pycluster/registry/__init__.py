"""The cluster-wide registry: names and groups of actors, behind swappable backends.

This package is also the plugin that provides the built-in backends, ``crdt`` (the
embedded default) and ``local``, through the same hook a third-party backend uses.
"""

from __future__ import annotations

from collections.abc import Iterable

from pycluster.actors.ref import ActorRef
from pycluster.hooks import hookimpl
from pycluster.registry.backend import ClaimFailed, RegistryBackend
from pycluster.registry.crdt import CrdtRegistry
from pycluster.registry.errors import AlreadyRegistered, AlreadyStarted, NotRegistered
from pycluster.registry.local import LocalRegistry
from pycluster.registry.refs import Entry
from pycluster.registry.registry import Registry

__all__ = [
    "ActorRef",
    "AlreadyRegistered",
    "AlreadyStarted",
    "ClaimFailed",
    "CrdtRegistry",
    "Entry",
    "LocalRegistry",
    "NotRegistered",
    "Registry",
    "RegistryBackend",
]


@hookimpl
def pycluster_register_registry_backends() -> Iterable[type[RegistryBackend]]:
    return [CrdtRegistry, LocalRegistry]
