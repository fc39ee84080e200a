"""Partitions between loopback addresses, cut with iptables in a chain of the lab's own.

Rules live in a chain named after the test process (``PYCLUSTER-LAB-<pid>``), jumped to
from INPUT, so concurrent test runs do not step on each other and teardown removes exactly
what this run added. Chains left by a test process that died are removed on setup.
Packets between two 127.0.0.0/8 addresses go through INPUT on ``lo``, so a DROP there cuts
them (checked with both the nft and the legacy backend).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

CHAIN_PREFIX = "PYCLUSTER-LAB-"
IPTABLES = "iptables"


def firewall_available() -> str | None:
    """None if partitions can be cut here, else why not (a skip reason)."""
    if shutil.which(IPTABLES) is None:
        return "iptables is not installed (bash .ci/setup installs it)"
    if os.geteuid() != 0:
        return "cutting partitions with iptables needs root"
    return None


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # -w: wait for the xtables lock rather than fail when another process holds it.
    result = subprocess.run(
        [IPTABLES, "-w", "5", *args], capture_output=True, text=True, check=False, timeout=30
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Firewall:
    """Cuts and restores traffic between pairs of addresses; :meth:`close` undoes all."""

    def __init__(self) -> None:
        self.chain = f"{CHAIN_PREFIX}{os.getpid()}"
        self._cuts: set[tuple[str, str]] = set()
        self._ready = False

    def _setup(self) -> None:
        if self._ready:
            return
        reason = firewall_available()
        if reason is not None:
            raise RuntimeError(reason)
        _remove_stale_chains()
        if _iptables("-n", "-L", self.chain, check=False).returncode == 0:
            _iptables("-F", self.chain)
        else:
            _iptables("-N", self.chain)
        if _iptables("-C", "INPUT", "-j", self.chain, check=False).returncode != 0:
            _iptables("-I", "INPUT", "-j", self.chain)
        self._ready = True

    def cut(self, a: str, b: str) -> None:
        """Drop every packet between addresses ``a`` and ``b``, both ways."""
        self._setup()
        for source, destination in ((a, b), (b, a)):
            rule = ("-s", source, "-d", destination, "-j", "DROP")
            if _iptables("-C", self.chain, *rule, check=False).returncode != 0:
                _iptables("-A", self.chain, *rule)
        self._cuts.add((a, b))

    def restore(self, a: str, b: str) -> None:
        """Let packets between ``a`` and ``b`` through again."""
        for source, destination in ((a, b), (b, a)):
            rule = ("-s", source, "-d", destination, "-j", "DROP")
            while _iptables("-C", self.chain, *rule, check=False).returncode == 0:
                _iptables("-D", self.chain, *rule)
        self._cuts.discard((a, b))

    def rules(self) -> list[str]:
        """The chain's rules, as ``iptables -S`` prints them (for failure reports)."""
        if not self._ready:
            return []
        return _iptables("-S", self.chain, check=False).stdout.splitlines()

    def close(self) -> None:
        """Remove the chain and its jump; safe to call when nothing was set up."""
        if not self._ready:
            return
        _delete_chain(self.chain)
        self._cuts.clear()
        self._ready = False


def _delete_chain(chain: str) -> None:
    while _iptables("-C", "INPUT", "-j", chain, check=False).returncode == 0:
        _iptables("-D", "INPUT", "-j", chain)
    _iptables("-F", chain, check=False)
    _iptables("-X", chain, check=False)


def _remove_stale_chains() -> None:
    listing = _iptables("-S", check=False).stdout
    for match in re.finditer(rf"^-N {re.escape(CHAIN_PREFIX)}(\d+)$", listing, re.MULTILINE):
        if not _pid_alive(int(match[1])):
            _delete_chain(f"{CHAIN_PREFIX}{match[1]}")
