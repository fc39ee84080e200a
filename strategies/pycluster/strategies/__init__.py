"""pycluster's built-in strategies: the first plugins, registered through the public hooks."""

from __future__ import annotations

from collections.abc import Iterable

from pycluster import Strategy, hookimpl
from pycluster.strategies.dns import DnsPoll, KubernetesDns, KubernetesDnsSrv
from pycluster.strategies.epmd import Epmd
from pycluster.strategies.gossip import Gossip
from pycluster.strategies.hosts_file import HostsFile
from pycluster.strategies.kubernetes import Kubernetes
from pycluster.strategies.local_epmd import LocalEpmd

__all__ = [
    "DnsPoll",
    "Epmd",
    "Gossip",
    "HostsFile",
    "Kubernetes",
    "KubernetesDns",
    "KubernetesDnsSrv",
    "LocalEpmd",
]


@hookimpl
def pycluster_register_strategies() -> Iterable[type[Strategy]]:
    return [
        DnsPoll,
        Epmd,
        Gossip,
        HostsFile,
        Kubernetes,
        KubernetesDns,
        KubernetesDnsSrv,
        LocalEpmd,
    ]
