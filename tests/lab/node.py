"""One node of the lab: its config file, its log file and its OS process.

A lab node logs JSON lines (``pycluster run --log-format json``): tests read its records'
fields (:meth:`LabNode.records`, :meth:`LabNode.events`), never the wording of a message.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

# Every process the lab (or a benchmark) starts is exec'd by this tiny launcher first, so
# that the kernel kills it if the starting process dies without tearing down (a CI
# timeout's SIGKILL, say): PR_SET_PDEATHSIG survives execve. Setting it in a preexec_fn
# would run Python between fork and exec, which is not safe while other threads exist
# (the lab waits for processes in threads). A command prefix (see LabNode.command_prefix)
# must exec what follows it, keeping the process.
_LAUNCHER = """\
import ctypes, os, signal, sys
PR_SET_PDEATHSIG = 1
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
if os.getppid() != int(sys.argv[1]):
    os._exit(70)  # the starting process died before prctl took effect
os.execvp(sys.argv[2], sys.argv[2:])
"""

COOKIE_ENV = "PYCLUSTER_COOKIE"


def launcher(*command: str) -> list[str]:
    """``command`` run so that it dies with this process (Linux: PR_SET_PDEATHSIG)."""
    return [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *command]


class NodeEvent(NamedTuple):
    """A node up/down record of a node's log."""

    kind: str
    """``up`` or ``down``."""
    peer: str
    reason: str | None
    """Why the peer went down (None for ``up``)."""
    at: float = 0.0
    """When the node logged it: its wall clock (time.time()), to the microsecond."""


class Listening(NamedTuple):
    """Where and when a node said it listens on its cluster port."""

    host: str
    port: int
    at: float
    """The node's wall clock (time.time()) when it logged it."""


def timestamp(record: dict[str, Any]) -> float:
    """A record's ``timestamp`` as time.time() would have said it."""
    return datetime.datetime.fromisoformat(str(record["timestamp"])).timestamp()


def parse_records(text: str) -> list[dict[str, Any]]:
    """The JSON records of a log's lines; other lines (a child's raw output) skipped."""
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill, say
            if isinstance(record, dict):
                records.append(record)
    return records


def matches(record: dict[str, Any], fields: dict[str, Any]) -> bool:
    """Whether ``record`` has every field of ``fields`` with that value."""
    return all(key in record and record[key] == value for key, value in fields.items())


def node_event(record: dict[str, Any]) -> NodeEvent | None:
    """The node up/down event a record tells of, if it does."""
    event = record.get("event")
    if event in ("node_up", "node_down"):
        kind = "up" if event == "node_up" else "down"
        reason = record.get("reason") if kind == "down" else None
        return NodeEvent(kind, str(record["peer"]), reason, timestamp(record))
    return None


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
    extra_args: tuple[str, ...] = ()
    """Arguments after ``run CONFIG`` (e.g. ``--app``)."""
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
        command += ["run", str(self.config_path), "--log-format", "json", *self.extra_args]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                launcher(*self.command_prefix, *command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                close_fds=True,
                start_new_session=True,  # a terminal's Ctrl-C is for the lab to handle
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

    def records(self, since: int = 0, **fields: Any) -> list[dict[str, Any]]:
        """The records logged from byte offset ``since`` that have all ``fields`` (e.g.
        ``event="connect_failed"``, ``level="WARNING"``), in order."""
        return [r for r in parse_records(self.log_text(since)) if matches(r, fields)]

    def events(self, since: int = 0) -> list[NodeEvent]:
        """The node up/down events this node logged, in order."""
        events = (node_event(record) for record in parse_records(self.log_text(since)))
        return [event for event in events if event is not None]

    def listening(self, since: int = 0) -> Listening | None:
        """Where the node said it listens (the first time after byte offset ``since``),
        None before it did."""
        for record in self.records(since):
            if record.get("event") == "listening":
                return Listening(str(record["host"]), int(record["port"]), timestamp(record))
        return None

    def dials_found_no_one(self, peer: str, since: int = 0) -> int:
        """How many of this node's dials to ``peer`` found no one listening."""
        return self._count(peer, since, "dial_failed")

    def refusals(self, peer: str, since: int = 0) -> int:
        """How many connections from ``peer`` this node refused after its handshake."""
        return self._count(peer, since, "connection_refused")

    def _count(self, peer: str, since: int, event: str) -> int:
        """Records of ``event`` about ``peer``."""
        return sum(
            record.get("event") == event and record.get("peer") == peer
            for record in self.records(since)
        )

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
