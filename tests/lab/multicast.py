"""Multicast on loopback, in a network namespace of the test's own.

Linux's ``lo`` carries IPv4 multicast between sockets that join the group on a loopback
address and send from it (``multicast_if: 127.0.0.x``), even without its MULTICAST flag.
To leave the host exactly as it was, the lab does not touch the host's ``lo`` or routes:
:func:`multicast_namespace` moves the calling thread - the test's event loop thread - into
a fresh network namespace (its own ``lo``, marked MULTICAST as a host prepared for
multicast would be, with routes for 224.0.0.0/4 and 255.255.255.255 so that nodes with the
default ``multicast_if`` or ``broadcast_only`` use it), and back out on exit. Sockets the
thread opens and processes it spawns (``Lab.start``) live in the namespace; the kernel
frees it once the last of them is gone, whatever happened to the test. Worker threads
(``asyncio.to_thread``) stay outside: nothing that talks to the nodes may run there.

IPv6 multicast does not work on ``lo`` (the kernel drops what is sent there), so with
``ipv6=True`` the namespace also gets a veth pair; its interface :data:`IPV6_INTERFACE`
has the address :data:`IPV6_ADDRESS` and carries IPv6 groups between local sockets.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
IPV6_INTERFACE = "gossip0"
IPV6_ADDRESS = "fd00:6::1"
_PEER = "gossip1"


def multicast_available() -> str | None:
    """None if :func:`multicast_namespace` works here, else why not (a skip reason)."""
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "creating a network namespace needs root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    return None


def _run(*command: str) -> str:
    # A child process: it lives in the namespace of the thread that spawns it.
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")
    return result.stdout


def _ip(*args: str) -> str:
    return _run("ip", *args)


def _call(function: str, *args: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, function)(*args) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{function}: {os.strerror(code)}")


def _sysctl(name: str, value: str) -> None:
    _run("sh", "-c", f"echo {value} > /proc/sys/{name.replace('.', '/')}")


def lo_flags() -> set[str]:
    """The flags of this thread's ``lo`` as ``ip link`` shows them (e.g. ``MULTICAST``)."""
    line = _ip("-o", "link", "show", "lo")
    return set(line.split("<", 1)[1].split(">", 1)[0].split(","))


@contextmanager
def multicast_namespace(*, route: bool = True, ipv6: bool = False) -> Iterator[None]:
    """Run the calling thread in a fresh network namespace where multicast works on ``lo``.

    ``route`` adds routes for 224.0.0.0/4 and broadcast to ``lo`` (without them, joining a
    group on 0.0.0.0 finds no interface, as on a host without a default route). ``ipv6`` adds the
    veth interface :data:`IPV6_INTERFACE` for IPv6 groups. Must be left on the thread that
    entered it.
    """
    reason = multicast_available()
    if reason is not None:
        raise RuntimeError(reason)
    thread = threading.get_ident()
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _call("unshare", CLONE_NEWNET)
        try:
            _ip("link", "set", "lo", "up")
            if "MULTICAST" not in lo_flags():
                _ip("link", "set", "lo", "multicast", "on")
            if route:
                _ip("route", "add", "224.0.0.0/4", "dev", "lo")
                _ip("route", "add", "broadcast", "255.255.255.255", "dev", "lo")
            if ipv6:
                # A fresh address is "tentative" (unusable) until duplicate detection ends.
                _sysctl("net.ipv6.conf.default.accept_dad", "0")
                _ip("link", "add", IPV6_INTERFACE, "type", "veth", "peer", "name", _PEER)
                _ip("link", "set", IPV6_INTERFACE, "up")
                _ip("link", "set", _PEER, "up")
                _ip("addr", "add", f"{IPV6_ADDRESS}/64", "dev", IPV6_INTERFACE, "nodad")
            yield
        finally:
            assert threading.get_ident() == thread, "left the namespace on another thread"
            _call("setns", original, CLONE_NEWNET)
    finally:
        os.close(original)
