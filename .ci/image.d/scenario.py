"""The checks of .ci/image: three containers of the Counter service, run for real.

Run by .ci/image once the images and the network exist (it passes them in, and the cookie
as PYCLUSTER_COOKIE). Every check polls with a deadline and asserts on data: the nodes'
/status JSON and /metrics, the containers' exit codes and logs, the exit status and output
of ``pycluster-counter``. The first failed check ends the run with exit status 1, after the
containers' last log lines. The containers are left for .ci/image to remove.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

START = time.monotonic()
NODEDOWN = re.compile(r'^pycluster_nodedown_total\{reason="([^"]*)"\} (\S+)$', re.MULTILINE)
STARTED = re.compile(r"spawn\('counter'\) -> started as (<\S+>)")
ALREADY = re.compile(r"spawn\('counter'\) -> AlreadyStarted, running as (<\S+>)")


class CheckFailed(Exception):
    """A check whose condition did not hold by its deadline."""


def say(text: str) -> None:
    print(f"[{time.monotonic() - START:6.1f}s] {text}", flush=True)


def until(what: str, probe: Callable[[], T | None], deadline: float) -> T:
    """Poll ``probe`` every 0.2 s until it returns something other than None; that value.
    CheckFailed naming ``what`` once ``deadline`` seconds have passed."""
    end = time.monotonic() + deadline
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > end:
            raise CheckFailed(f"{what}: not within {deadline:.0f} s")
        time.sleep(0.2)


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run podman; its output (stdout and stderr in one, in order) in ``stdout``."""
    result = subprocess.run(
        ["podman", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    if check and result.returncode != 0:
        raise CheckFailed(f"podman {' '.join(args)}: exit {result.returncode}: {result.stdout}")
    return result


class Container:
    """One container of the Counter service, named app@<its address> as a pod would be."""

    def __init__(self, name: str, ip: str) -> None:
        self.name = name
        self.ip = ip
        self.node = f"app@{ip}"

    def get(self, path: str) -> tuple[int, str] | None:
        """(status, body) of GET ``path`` on the node's HTTP port; None if it does not
        answer."""
        try:
            with urllib.request.urlopen(f"http://{self.ip}:9200{path}", timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return None

    def status(self) -> dict[str, Any] | None:
        answer = self.get("/status")
        if answer is None or answer[0] != 200:
            return None
        status: dict[str, Any] = json.loads(answer[1])
        return status

    def nodedowns(self) -> dict[str, float]:
        """``pycluster_nodedown_total`` by reason (empty if the node does not answer)."""
        answer = self.get("/metrics")
        if answer is None:
            return {}
        return {reason: float(value) for reason, value in NODEDOWN.findall(answer[1])}

    def state(self) -> tuple[str, int]:
        result = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", self.name)
        status, code = result.stdout.split()
        return status, int(code)

    def log_lines(self) -> list[str]:
        return podman("logs", self.name).stdout.splitlines()

    def counter(self, command: str) -> tuple[int, str]:
        """``pycluster-counter COMMAND`` run in this container, through its own node."""
        result = podman("exec", self.name, "pycluster-counter", command, check=False)
        return result.returncode, result.stdout.strip()


def run_container(container: Container, args: argparse.Namespace) -> None:
    podman(
        *("run", "--detach", "--name", container.name),
        *("--network", args.network, "--ip", container.ip, "--network-alias", args.alias),
        # What the Deployment gives a pod: its IP, the cookie (from this environment,
        # so it shows in no command line), the Service's name.
        *("--env", f"POD_IP={container.ip}", "--env", "PYCLUSTER_COOKIE"),
        *("--env", f"SERVICE_NAME={args.alias}.dns.podman"),
        # The app starts the Counter once two peers have merged: one Counter, not three.
        # A tick timeout of 5 s: a loaded machine must not make a running node look down.
        *("--env", "MIN_PEERS=2", "--env", "POLLING_INTERVAL=500", "--env", "NET_TICK_TIMEOUT=5"),
        # As locked down as the pod: read-only root, a small /tmp, no capabilities.
        *("--read-only", "--tmpfs", "/tmp:size=16m", "--cap-drop", "all"),
        *("--security-opt", "no-new-privileges", "--stop-timeout", "30"),
        args.image,
    )


def formed(containers: list[Container], deadline: float = 60) -> None:
    """Every container's node lists exactly the others, its topology runs without a
    problem, and it is ready."""

    def check() -> bool | None:
        for c in containers:
            state = c.state()
            if state[0] == "exited":  # it will not come back by itself: no use waiting
                raise CheckFailed(f"{c.name} exited with status {state[1]}")
            status = c.status()
            others = sorted(o.node for o in containers if o is not c)
            if status is None or status["nodes"] != others:
                return None
            topology = status["topologies"]["service"]
            if topology["strategy"] != "kubernetes.dns" or topology["state"] != "running":
                return None
            if topology["problem"] is not None:
                return None
            ready = c.get("/readyz")
            if ready is None or ready[0] != 200:
                return None
        return True

    until(f"{len(containers)} nodes see each other and are ready", check, deadline)
    for c in containers:
        status = c.status() or {}
        say(f"  {c.node} sees {', '.join(status['nodes'])}; /readyz 200")


def seen_down(
    watchers: list[Container],
    gone: Container,
    before: dict[str, dict[str, float]],
    deadline: float,
) -> set[str]:
    """Wait until every watcher lists ``gone`` no more and counted one more nodedown; the
    reasons their metrics give."""

    def check() -> set[str] | None:
        reasons: set[str] = set()
        for w in watchers:
            status = w.status()
            if status is None or gone.node in status["nodes"]:
                return None
            after = w.nodedowns()
            grown = [r for r, v in after.items() if v > before[w.name].get(r, 0)]
            if not grown:
                return None
            reasons.update(grown)
        return reasons

    return until(f"{gone.node} seen down by the others", check, deadline)


def one_reason(gone: Container, reasons: set[str]) -> str:
    """The reason every watcher gave, or CheckFailed."""
    if len(reasons) != 1:
        raise CheckFailed(f"{gone.node} seen down for different reasons: {sorted(reasons)}")
    return next(iter(reasons))


def metrics_of(containers: list[Container]) -> dict[str, dict[str, float]]:
    return {c.name: c.nodedowns() for c in containers}


def one_counter_started(containers: list[Container], skip: dict[str, int]) -> str:
    """Exactly one container's app logged that it started the Counter and the others that
    they got AlreadyStarted naming that same Counter (log lines after ``skip[name]``);
    the Counter's ref."""

    def check() -> tuple[list[str], list[str]] | None:
        started: list[str] = []
        already: list[str] = []
        for c in containers:
            for line in c.log_lines()[skip.get(c.name, 0) :]:
                started += STARTED.findall(line)
                already += ALREADY.findall(line)
        if len(started) + len(already) < len(containers):
            return None
        return started, already

    started, already = until("each app reports how its spawn('counter') went", check, 30)
    if len(started) != 1 or len(already) != len(containers) - 1:
        raise CheckFailed(f"started {started}, AlreadyStarted {already}: expected one start")
    if set(already) != set(started):
        raise CheckFailed(f"AlreadyStarted names {already}, not the started {started[0]}")
    say(f"  one app started the Counter ({started[0]}); {len(already)} got AlreadyStarted")
    return started[0]


def increments(containers: list[Container], first: int) -> None:
    """``increment`` through each container in turn returns first, first + 1, ..."""
    for expected, c in enumerate(containers, first):
        code, output = c.counter("increment")
        if code != 0 or not output.endswith(f"-> {expected}"):
            raise CheckFailed(f"increment through {c.name}: exit {code}: {output}")
        say(f"  {c.name}$ pycluster-counter increment  ->  {output}")


def scenario(args: argparse.Namespace) -> None:
    containers = [Container(name, f"{args.prefix}.{11 + i}") for i, name in enumerate(args.names)]
    for c in containers:
        run_container(c, args)
    say(f"started {', '.join(f'{c.name} ({c.node})' for c in containers)}")

    say("check: they find each other through kubernetes.dns and form one cluster")
    formed(containers)
    ref = one_counter_started(containers, {})

    say("check: starting the Counter again gets AlreadyStarted; every node reaches it")
    code, output = containers[-1].counter("spawn")
    if code != 3 or not output.endswith(f"AlreadyStarted, running as {ref}"):
        raise CheckFailed(f"spawn through {containers[-1].name}: exit {code}: {output}")
    say(f"  {containers[-1].name}$ pycluster-counter spawn  ->  {output} (exit {code})")
    increments(containers, 1)

    a, b, c = containers
    say(f"check: podman stop {b.name} (SIGTERM) is a graceful leave")
    before = metrics_of([a, c])
    podman("stop", b.name)
    state = b.state()
    if state != ("exited", 0):
        raise CheckFailed(f"{b.name} after podman stop: {state}, expected ('exited', 0)")
    reason = one_reason(b, seen_down([a, c], b, before, 15))
    if reason != "left":
        raise CheckFailed(f"{b.node} seen down as {reason!r}, expected 'left'")
    say(f"  {b.name} exited 0; {a.node} and {c.node} count it down as '{reason}'")
    podman("start", b.name)
    formed(containers)

    say(f"check: podman kill {c.name} (SIGKILL) is seen down")
    before = metrics_of([a, b])
    podman("kill", c.name)

    def exited() -> tuple[str, int] | None:
        state = c.state()
        return state if state[0] == "exited" else None

    state = until(f"{c.name} exits", exited, 15)
    if state[1] != 137:
        raise CheckFailed(f"{c.name} after podman kill: exit {state[1]}, expected 137 (SIGKILL)")
    # Its kernel closes its sockets: with a FIN, or with a reset where bytes it had not
    # read were waiting (a tick, say). Each watcher may see either; both are the closure.
    reasons = seen_down([a, b], c, before, 15)
    for reason in reasons:
        if reason == "left" or reason.startswith("net tick timeout"):
            raise CheckFailed(f"{c.node} was killed: its closed connection, not {reason!r}")
    say(f"  {c.name} exited 137; {a.node} and {b.node} count it down as {sorted(reasons)}")
    podman("start", c.name)
    formed(containers)

    say(f"check: podman pause {a.name} (frozen, connections open) is seen down by the ticks")
    before = metrics_of([b, c])
    podman("pause", a.name)
    reason = one_reason(a, seen_down([b, c], a, before, 30))
    if not reason.startswith("net tick timeout"):
        raise CheckFailed(f"{a.node} paused, but seen down as {reason!r}")
    say(f"  {b.node} and {c.node} count it down as '{reason}'")
    podman("unpause", a.name)

    say("check: all three stopped, then started together, form the cluster again")
    skip = {c.name: len(c.log_lines()) for c in containers}
    podman("stop", *(c.name for c in containers))
    states = {c.name: c.state() for c in containers}
    if set(states.values()) != {("exited", 0)}:
        raise CheckFailed(f"after podman stop: {states}")
    podman("start", *(c.name for c in containers))
    formed(containers)
    one_counter_started(containers, skip)
    increments(containers, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--network", required=True)
    parser.add_argument("--alias", required=True, help="the name every container answers to")
    parser.add_argument("--prefix", required=True, help="the network's /24, e.g. 10.89.77")
    parser.add_argument("names", nargs=3, help="the containers' names")
    args = parser.parse_args()
    try:
        scenario(args)
    except CheckFailed as exc:
        say(f"FAILED: {exc}")
        for name in args.names:
            logs = podman("logs", "--tail", "15", name, check=False)
            print(f"--- last lines of {name}:\n{logs.stdout}", flush=True)
        return 1
    say("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
