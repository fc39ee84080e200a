"""pycluster: Python services that find each other, form a cluster, and share a registry.

The public surface is exactly ``__all__``; everything else lives in modules an application
has no reason to import.
"""

from pycluster.config import Config, ConfigError, load_config
from pycluster.discovery import Plan
from pycluster.events import (
    NodeDown,
    NodeUp,
    StrategyCrashed,
    TopologyConnect,
    TopologyDisconnect,
)
from pycluster.membership import InMemoryMembership, InMemoryNetwork, Membership
from pycluster.nodename import NodeName, NodeNameError, parse_node_name
from pycluster.plugins import PluginError, Plugins, hookimpl
from pycluster.strategy import Strategy, Topology
from pycluster.supervisor import RestartPolicy, Supervisor, TopologyStatus

__version__ = "0.1.0.dev0"

__all__ = [
    "Config",
    "ConfigError",
    "InMemoryMembership",
    "InMemoryNetwork",
    "Membership",
    "NodeDown",
    "NodeName",
    "NodeNameError",
    "NodeUp",
    "Plan",
    "PluginError",
    "Plugins",
    "RestartPolicy",
    "Strategy",
    "StrategyCrashed",
    "Supervisor",
    "Topology",
    "TopologyConnect",
    "TopologyDisconnect",
    "TopologyStatus",
    "__version__",
    "hookimpl",
    "load_config",
    "parse_node_name",
]
