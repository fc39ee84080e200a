"""Host names the lab resolves, for nodes named ``app@HOST`` rather than ``app@IP``.

Peers dial such a node through the system resolver (getaddrinfo, which reads /etc/hosts
first), so its host name must resolve in every node process, and the machine must not be
changed for it. :func:`private_hosts` gives the command prefix that runs a node in a
private mount namespace where a hosts file of the lab is bind-mounted over /etc/hosts: the
mount exists only for that process and dies with it, whatever happens to the test.

This needs ``unshare`` (util-linux) and ``mount``, and the right to create a mount
namespace (root, as CI runs, or CAP_SYS_ADMIN).

:func:`declare_node` declares a node with any config (any name and topologies), run with
such a prefix or none.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.lab.lab import HTTP_PORT, NODE_PORT, Lab
from tests.lab.node import LabNode

SYSTEM_HOSTS = Path("/etc/hosts")
# ``$1``: the lab's hosts file; the rest: the node's command, exec'd in the same process
# (the launcher's PR_SET_PDEATHSIG then still applies, and signals reach the node).
_MOUNT_AND_EXEC = 'mount --bind "$1" /etc/hosts && shift && exec "$@"'


def write_hosts(path: Path, names: Mapping[str, str]) -> Path:
    """Write a hosts file at ``path``: the machine's own entries (localhost...), then one
    line per ``name -> address``. Returns ``path``.

    Write it before the nodes start: a bind mount holds the file it was given, so a file
    replaced later (written elsewhere, then renamed) would not be seen by them.
    """
    lines = [SYSTEM_HOSTS.read_text(encoding="utf-8").rstrip("\n"), "# the lab's names"]
    for name, address in sorted(names.items()):
        lines.append(f"{ipaddress.ip_address(address)} {name}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def private_hosts(path: Path) -> tuple[str, ...]:
    """A command prefix: run the rest with ``path`` as its /etc/hosts, in a private mount
    namespace of its own (nothing changes outside it; it ends with the process)."""
    return (
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        _MOUNT_AND_EXEC,
        "lab-hosts",
        str(path.resolve()),
    )


def declare_node(
    lab: Lab,
    config: Mapping[str, Any],
    *,
    address: str,
    command_prefix: tuple[str, ...] = (),
) -> LabNode:
    """Declare (not start) a node whose config file is ``config``, written as is.

    ``config`` names the node (``node.name``) and serves HTTP (``node.http.port``) on
    ``address``, the node's IP literal or its ``node.bind``, one of :meth:`Lab.address`.
    The lab stops the node, and shows its log if the test fails.
    """
    node_config = config["node"]
    node = lab.add(
        node_config["name"],
        address,
        dict(config),
        port=node_config.get("port", NODE_PORT),
        http_port=node_config["http"]["port"],
        stem=f"node-{address.rsplit('.', 1)[1]}",
    )
    node.command_prefix = command_prefix
    return node


def declare_listed(lab: Lab, names: list[str], index: int, **node: Any) -> LabNode:
    """Declare ``names[index]`` (each name on its own lab address) with a 1 s tick timeout,
    HTTP, and an ``epmd`` topology listing every one of ``names``; ``node`` adds to or
    replaces its ``node`` settings."""
    config = {
        "node": {
            "name": names[index],
            "net_tick_timeout": 1.0,
            "http": {"port": HTTP_PORT},
            **node,
        },
        "topologies": {
            "lab": {"strategy": "epmd", "config": {"hosts": names, "retry_interval": 300}}
        },
    }
    return declare_node(lab, config, address=names[index].split("@")[1])
