"""The hook specifications of pycluster's plugins, and nothing else.

A plugin is a module or object with functions marked ``@pycluster.hookimpl`` and named
after these specs; it may take any subset of a spec's arguments. Third-party plugins are
found through the ``pycluster`` entry-point group; the built-in strategies register through
these very hooks. Hooks are synchronous: registration hooks return classes (whose
instances do the async work), observer hooks are told about events and must return
quickly. An observer that raises is logged and does not disturb the node.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

# Private: plugins mark implementations with the public ``pycluster.hookimpl``.
from pycluster.hooks import _hookspec

if TYPE_CHECKING:
    from pycluster.events import (
        NodeDown,
        NodeUp,
        StrategyCrashed,
        TopologyConnect,
        TopologyDisconnect,
    )
    from pycluster.registry import Entry, RegistryBackend
    from pycluster.registry.events import (
        Joined,
        Left,
        NameConflict,
        Registered,
        Unregistered,
    )
    from pycluster.strategy import Strategy


@_hookspec
def pycluster_register_strategies() -> Iterable[type[Strategy]]:
    """Return the :class:`~pycluster.Strategy` classes this plugin provides.

    Called whenever pycluster looks the strategies up (loading a config, starting a
    supervisor), so a plugin registered after the first look-up is included; return the
    same classes every time. Every plugin's results are combined; each class is known by
    its ``name`` (the ``strategy:`` value in YAML), and two plugins providing the same name
    is an error naming both.
    """


@_hookspec
def pycluster_register_registry_backends() -> Iterable[type[RegistryBackend]]:
    """Return the :class:`~pycluster.registry.RegistryBackend` classes this plugin provides.

    Called whenever pycluster looks the backends up (loading a config, starting a node);
    results are combined as for strategies, and a name (the ``registry.backend`` value in
    YAML) may be provided by one plugin only.
    """


@_hookspec(firstresult=True)
def pycluster_resolve_name_conflict(name: str, a: Entry, b: Entry) -> Entry | None:
    """Pick which of two registrations of ``name`` survives after a partition heals.

    Return ``a`` or ``b``, or None to leave it to the next plugin (and finally to the
    default: the earlier claim wins). The first non-None result wins. It must be a pure
    function of its arguments: every node calls it and all must pick the same entry.
    """


@_hookspec
def pycluster_node_up(event: NodeUp) -> None:
    """Called when this node gains a connection to a peer (every topology's alike)."""


@_hookspec
def pycluster_node_down(event: NodeDown) -> None:
    """Called when this node loses its connection to a peer, with the reason."""


@_hookspec
def pycluster_topology_connect(event: TopologyConnect) -> None:
    """Called when a topology connects a node its strategy discovered (not already connected)."""


@_hookspec
def pycluster_topology_disconnect(event: TopologyDisconnect) -> None:
    """Called when a topology disconnects a node that a successful discovery left out."""


@_hookspec
def pycluster_strategy_crashed(event: StrategyCrashed) -> None:
    """Called each time a topology's strategy raises, before it is restarted or marked failed.

    ``event.delay`` is None when the crash exhausted the restart intensity and the topology
    is now failed (other topologies keep running).
    """


@_hookspec
def pycluster_name_registered(event: Registered, scope: str) -> None:
    """Called when this node learns that a name now names an actor (or that its
    metadata changed), whichever node made the change; ``scope`` is ``""`` by default."""


@_hookspec
def pycluster_name_unregistered(event: Unregistered, scope: str) -> None:
    """Called when this node learns that a name no longer names its actor, with why."""


@_hookspec
def pycluster_group_joined(event: Joined, scope: str) -> None:
    """Called when this node learns that an actor joined a group (or changed its meta)."""


@_hookspec
def pycluster_group_left(event: Left, scope: str) -> None:
    """Called when this node learns that an actor left a group, with why."""


@_hookspec
def pycluster_name_conflict(event: NameConflict, scope: str) -> None:
    """Called when this node sees two actors registered under one name: ``event.winner``
    keeps it, ``event.loser`` is stopped by its node."""
