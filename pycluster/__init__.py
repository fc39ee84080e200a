"""pycluster: Python services that find each other, form a cluster, and share a registry.

The public surface is exactly ``__all__``; everything else lives in modules an application
has no reason to import.
"""

import importlib
import warnings
from typing import Any

from pycluster.actors import Actor, ActorCrashed, ActorRestartPolicy, NoSuchActor
from pycluster.codec import Codec
from pycluster.config import Config, ConfigError, checks, setting
from pycluster.errors import NotConnected, RemoteError
from pycluster.events import (
    NodeDown,
    NodeUp,
    StrategyCrashed,
    TopologyConnect,
    TopologyDisconnect,
)
from pycluster.hooks import hookimpl
from pycluster.logs import JsonFormatter, configure_logging
from pycluster.membership import ConnectFailure, InMemoryNetwork, Membership
from pycluster.node import Node
from pycluster.nodename import NodeName, NodeNameError, parse_node_name
from pycluster.plugins import PluginError, Plugins, load_config
from pycluster.polling import PollSchedule, poll
from pycluster.registry import (
    ActorRef,
    AlreadyRegistered,
    AlreadyStarted,
    ClaimFailed,
    Entry,
    NotRegistered,
    Registry,
    RegistryBackend,
)
from pycluster.registry.backend import Registration, Resolve
from pycluster.registry.events import (
    EventsLost,
    EventStream,
    Joined,
    Left,
    NameConflict,
    Registered,
    RegistryEvent,
    Unregistered,
)
from pycluster.strategy import Strategy, Topology
from pycluster.supervisor import TopologyRestartPolicy, TopologyStatus
from pycluster.throttle import Throttle
from pycluster.transport.waist import Mailbox, Transport

__version__ = "0.1.0.dev0"

__all__ = [
    "Actor",
    "ActorCrashed",
    "ActorRef",
    "ActorRestartPolicy",
    "AlreadyRegistered",
    "AlreadyStarted",
    "ClaimFailed",
    "Codec",
    "Config",
    "ConfigError",
    "ConnectFailure",
    "Entry",
    "EventStream",
    "EventsLost",
    "InMemoryNetwork",
    "Joined",
    "JsonFormatter",
    "Left",
    "Mailbox",
    "Membership",
    "NameConflict",
    "NoSuchActor",
    "Node",
    "NodeDown",
    "NodeName",
    "NodeNameError",
    "NodeUp",
    "NotConnected",
    "NotRegistered",
    "PluginError",
    "Plugins",
    "PollSchedule",
    "Registered",
    "Registration",
    "Registry",
    "RegistryBackend",
    "RegistryEvent",
    "RemoteError",
    "Resolve",
    "Strategy",
    "StrategyCrashed",
    "Throttle",
    "Topology",
    "TopologyConnect",
    "TopologyDisconnect",
    "TopologyRestartPolicy",
    "TopologyStatus",
    "Transport",
    "Unregistered",
    "__version__",
    "checks",
    "configure_logging",
    "hookimpl",
    "load_config",
    "parse_node_name",
    "poll",
    "setting",
]

_MOVED = {
    "RestartPolicy": (
        "pycluster.supervisor",
        "TopologyRestartPolicy",
        "pycluster.TopologyRestartPolicy",
    ),
    "Supervisor": ("pycluster.supervisor", "Supervisor", "pycluster.supervisor.Supervisor"),
    "Plan": ("pycluster.discovery", "Plan", "pycluster.discovery.Plan"),
    "InMemoryMembership": (
        "pycluster.membership",
        "InMemoryMembership",
        "pycluster.membership.InMemoryMembership",
    ),
}
"""Names that left the top level, kept for one release with a DeprecationWarning."""


def __getattr__(name: str) -> Any:
    moved = _MOVED.get(name)
    if moved is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute, instead = moved
    warnings.warn(
        f"pycluster.{name} is deprecated: use {instead}", DeprecationWarning, stacklevel=2
    )
    return getattr(importlib.import_module(module), attribute)
