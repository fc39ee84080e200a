"""One node of the lab: its config file, its log file and its OS process."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

# The node runs as ``python -m pycluster run CONFIG``, exec'd by this tiny launcher first so
# that the kernel kills it if the test process dies without tearing down (a CI timeout's
# SIGKILL, say): PR_SET_PDEATHSIG survives execve. Setting it in a preexec_fn would run
# Python between fork and exec, which is not safe while other threads exist. A command
# prefix (see LabNode.command_prefix) must exec what follows it, keeping the process.
_LAUNCHER = """\
import ctypes, os, signal, sys
PR_SET_PDEATHSIG = 1
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
if os.getppid() != int(sys.argv[1]):
    os._exit(70)  # the test process died before prctl took effect
os.execvp(sys.argv[2], sys.argv[2:])
"""

COOKIE_ENV = "PYCLUSTER_COOKIE"
_EVENT = re.compile(r" INFO pycluster\.node (?P<me>\S+): node (?P<kind>up|down) (?P<peer>\S+)")
_REASON = re.compile(r" \((?P<reason>.*)\)$")


class NodeEvent(NamedTuple):
    """A ``node up``/``node down`` line of a node's log."""

    kind: str
    """``up`` or ``down``."""
    peer: str
    reason: str | None
    """Why the peer went down (None for ``up``)."""


@dataclasses.dataclass(eq=False)
class LabNode:
    """A node process of the lab (declared, running or gone)."""

    name: str
    address: str
    port: int
    http_port: int
    config_path: Path
    log_path: Path
    cookie: str
    verbose: bool = True
    command_prefix: tuple[str, ...] = ()
    """Run the node as ``PREFIX... python -m pycluster run CONFIG``; the prefix must exec
    the rest in the same process (e.g. tests.lab.hosts.private_hosts)."""
    process: subprocess.Popen[bytes] | None = None
    spawned_at: float | None = None
    """time.monotonic() when the process was spawned."""
    listening_at: float | None = None
    """time.monotonic() when the lab first got its /status (so it listens: HTTP starts last)."""
    retired: bool = False
    """Left out of the logs shown on failure (a finished trial of a repeated scenario)."""

    def __str__(self) -> str:
        return self.name

    @property
    def pid(self) -> int:
        """The process id (the node must have been spawned)."""
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    @property
    def running(self) -> bool:
        """Whether the process exists and has not exited (a stopped process is running)."""
        return self.process is not None and self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        """The exit status (negative: killed by that signal), None while running."""
        return None if self.process is None else self.process.poll()

    def url(self, path: str) -> str:
        """URL of one of the node's HTTP endpoints, e.g. ``url("/status")``."""
        return f"http://{self.address}:{self.http_port}{path}"

    def spawn(self) -> None:
        """Start the process; its stdout and stderr go to :attr:`log_path`."""
        assert self.process is None, f"{self.name} was already started"
        env = dict(os.environ)
        env[COOKIE_ENV] = self.cookie  # never on the command line, where ps shows it
        env["PYTHONUNBUFFERED"] = "1"
        command = [sys.executable, "-m", "pycluster", *(["-v"] if self.verbose else [])]
        command += ["run", str(self.config_path)]
        launcher = [sys.executable, "-c", _LAUNCHER, str(os.getpid())]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*launcher, *self.command_prefix, *command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                close_fds=True,
            )

    def send_signal(self, signum: signal.Signals) -> None:
        """Send ``signum`` to the process if it still runs."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signum)

    def log_text(self, since: int = 0) -> str:
        """The node's log from byte offset ``since``."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(since)
                return log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        """Bytes logged so far: an offset for :meth:`log_text` and ``Lab.wait_for_log``."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def events(self, since: int = 0) -> list[NodeEvent]:
        """The node up/down lines this node logged, in order."""
        events = []
        for line in self.log_text(since).splitlines():
            match = _EVENT.search(line)
            if match is None or match["me"] != self.name:
                continue
            reason = _REASON.search(line) if match["kind"] == "down" else None
            events.append(NodeEvent(match["kind"], match["peer"], reason and reason["reason"]))
        return events

    def rss_bytes(self) -> int:
        """Resident memory of the process, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmRSS for {self.name}")

    def describe(self) -> str:
        """One line: name, pid, state."""
        if self.process is None:
            return f"{self.name} (never started)"
        code = self.process.poll()
        state = "running" if code is None else f"exited {code}"
        return f"{self.name} (pid {self.process.pid}, {state})"
