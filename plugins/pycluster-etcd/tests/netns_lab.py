"""A small network of hosts in network namespaces, for partitions gRPC cannot dodge.

Every host (etcd, each node, the test's driver) is a network namespace of its own with one
interface, ``eth0``, on a bridge that lives in a "switch" namespace; addresses are
10.200.0.x and exist only inside these namespaces. A partition is cut with iptables
*inside* a host's namespace, so it applies to every socket of that host whatever address
it dials from. Everything is named ``pce<pid>-...`` after the test process; closing the
network deletes the namespaces (and with them their interfaces and rules), and namespaces
left behind by a test process that died are deleted on the next setup.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence

SUBNET = "10.200.0"
PREFIX = "pce"


def netns_available() -> str | None:
    """None if namespaces can be made here, else why not."""
    if shutil.which("ip") is None or shutil.which("iptables") is None:
        return "iproute2 and iptables are needed (bash .ci/setup installs iptables)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> None:
    """Delete namespaces whose test process is gone."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        match = re.match(rf"^({PREFIX}(\d+)-\S+)", line)
        if match and not _alive(int(match[2])):
            _ip("netns", "del", match[1], check=False)


class Network:
    """Hosts on one switch; :meth:`close` removes it all."""

    def __init__(self) -> None:
        self.base = f"{PREFIX}{os.getpid()}"
        self.switch = f"{self.base}-sw"
        self.hosts: dict[str, str] = {}
        """Host name -> its address."""
        self._namespaces: list[str] = []

    def namespace(self, host: str) -> str:
        """The namespace of ``host``."""
        return f"{self.base}-{host}"

    def exec(self, host: str) -> list[str]:
        """Words that run a command inside ``host``."""
        return ["ip", "netns", "exec", self.namespace(host)]

    def open(self) -> None:
        """Create the switch."""
        remove_stale()
        self._add_namespace(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")

    def add_host(self, host: str, number: int) -> str:
        """A host with address 10.200.0.``number``; its address."""
        namespace = self.namespace(host)
        address = f"{SUBNET}.{number}"
        self._add_namespace(namespace)
        port = f"p-{host}"[:15]
        _ip("link", "add", "eth0", "netns", namespace, "type", "veth", "peer", "name", port,
            "netns", self.switch)  # fmt: skip
        _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        self.hosts[host] = address
        return address

    def cut(self, host: str, others: Sequence[str]) -> None:
        """Drop every packet between ``host`` and ``others`` (rules inside ``host``)."""
        for other in others:
            address = self.hosts[other]
            self._iptables(host, "-A", "INPUT", "-s", address, "-j", "DROP")
            self._iptables(host, "-A", "OUTPUT", "-d", address, "-j", "DROP")

    def heal(self, host: str) -> None:
        """Remove every rule of ``host``."""
        self._iptables(host, "-F")

    def close(self) -> None:
        """Delete every namespace (processes in them must be gone first)."""
        for namespace in reversed(self._namespaces):
            _ip("netns", "del", namespace, check=False)
        self._namespaces.clear()

    def leftovers(self) -> list[str]:
        """Namespaces of this network that still exist (for teardown checks)."""
        listing = _ip("netns", "list", check=False).stdout
        return [line.split()[0] for line in listing.splitlines() if line.startswith(self.base)]

    def _add_namespace(self, namespace: str) -> None:
        _ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")

    def _iptables(self, host: str, *args: str) -> None:
        result = subprocess.run(
            [*self.exec(host), "iptables", "-w", "5", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"iptables {' '.join(args)} in {host}: {result.stderr.strip()}")
