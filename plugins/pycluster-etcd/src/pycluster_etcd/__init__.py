"""etcd for pycluster: the ``etcd`` registry backend and the ``etcd`` discovery strategy.

A plugin like any third-party one: this module is the ``pycluster`` entry point declared
in the distribution's ``pyproject.toml``, and registers both through pycluster's public
hooks. Installing the distribution makes ``registry: {backend: etcd}`` and
``strategy: etcd`` available; uninstalling it removes them.
"""

from __future__ import annotations

from collections.abc import Iterable

import pycluster
from pycluster import RegistryBackend
from pycluster_etcd.options import (
    EtcdAuth,
    EtcdConnection,
    EtcdRegistryOptions,
    EtcdStrategyConfig,
    EtcdTls,
)
from pycluster_etcd.registry import EtcdRegistry
from pycluster_etcd.strategy import EtcdStrategy

__version__ = "0.1.0.dev0"

__all__ = [
    "EtcdAuth",
    "EtcdConnection",
    "EtcdRegistry",
    "EtcdRegistryOptions",
    "EtcdStrategy",
    "EtcdStrategyConfig",
    "EtcdTls",
    "__version__",
]


@pycluster.hookimpl
def pycluster_register_registry_backends() -> Iterable[type[RegistryBackend]]:
    return [EtcdRegistry]


@pycluster.hookimpl
def pycluster_register_strategies() -> Iterable[type[pycluster.Strategy]]:
    return [EtcdStrategy]
