"""pycluster's configuration: YAML -> validated, frozen attrs classes.

Everything is validated once, before anything starts; :class:`ConfigError` lists every
problem with the dotted path of its key. Strategy and backend authors declare their own
config classes with :func:`setting` and the checks in :mod:`pycluster.config.checks`.
"""

from pycluster.config import checks
from pycluster.config.convert import describe, setting, structure
from pycluster.config.errors import ConfigError, ConfigIssue
from pycluster.config.load import Extensions, read_yaml
from pycluster.config.schema import (
    Config,
    HttpConfig,
    NodeConfig,
    ReadyConfig,
    RegistryConfig,
    TlsConfig,
    TopologyConfig,
)

__all__ = [
    "Config",
    "ConfigError",
    "ConfigIssue",
    "Extensions",
    "HttpConfig",
    "NodeConfig",
    "ReadyConfig",
    "RegistryConfig",
    "TlsConfig",
    "TopologyConfig",
    "checks",
    "describe",
    "read_yaml",
    "setting",
    "structure",
]
