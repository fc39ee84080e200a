"""pycluster: Python services that find each other, form a cluster, and share a registry.

The public surface is exactly ``__all__``; everything else lives in modules an application
has no reason to import.
"""

from pycluster.actors import Actor, ActorCrashed, NoSuchActor
from pycluster.codec import Codec
from pycluster.config import Config, ConfigError, checks, load_config, setting
from pycluster.discovery import Plan
from pycluster.errors import NotConnected, RemoteError
from pycluster.events import (
    NodeDown,
    NodeUp,
    StrategyCrashed,
    TopologyConnect,
    TopologyDisconnect,
)
from pycluster.membership import InMemoryMembership, InMemoryNetwork, Membership
from pycluster.node import Node
from pycluster.nodename import NodeName, NodeNameError, parse_node_name
from pycluster.plugins import PluginError, Plugins, hookimpl
from pycluster.polling import PollSchedule, poll
from pycluster.registry import (
    ActorRef,
    AlreadyRegistered,
    AlreadyStarted,
    ClaimFailed,
    NotRegistered,
    Registry,
    RegistryBackend,
)
from pycluster.strategy import Strategy, Topology
from pycluster.supervisor import RestartPolicy, Supervisor, TopologyStatus

__version__ = "0.1.0.dev0"

__all__ = [
    "Actor",
    "ActorCrashed",
    "ActorRef",
    "AlreadyRegistered",
    "AlreadyStarted",
    "ClaimFailed",
    "Codec",
    "Config",
    "ConfigError",
    "InMemoryMembership",
    "InMemoryNetwork",
    "Membership",
    "NoSuchActor",
    "Node",
    "NodeDown",
    "NodeName",
    "NodeNameError",
    "NodeUp",
    "NotConnected",
    "NotRegistered",
    "Plan",
    "PluginError",
    "Plugins",
    "PollSchedule",
    "Registry",
    "RegistryBackend",
    "RemoteError",
    "RestartPolicy",
    "Strategy",
    "StrategyCrashed",
    "Supervisor",
    "Topology",
    "TopologyConnect",
    "TopologyDisconnect",
    "TopologyStatus",
    "__version__",
    "checks",
    "hookimpl",
    "load_config",
    "parse_node_name",
    "poll",
    "setting",
]
