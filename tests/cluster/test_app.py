"""Your service as a node, with real ``pycluster run`` processes: ``--app`` (or ``app:``)
names a callable that gets the started node; an async context manager is entered once
the node is first ready and exited on SIGTERM before it leaves; ``/readyz`` is 200 only
while the app runs; an app that fails at start exits 1; ``pycluster check`` finds an app
that cannot be imported (exit 2, path ``app``)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pycluster.cli import GC_FIRST_THRESHOLD
from tests.lab import Lab, LabNode
from tests.lab.hosts import declare_listed

WITHIN = 15.0

SERVICE = """
import asyncio
import contextlib
import pathlib

from pycluster import Actor

MARKS = pathlib.Path({marks!r})


class Counter(Actor):
    def __init__(self) -> None:
        self.value = 0

    async def handle_call(self, message):
        self.value += 1
        return self.value


@contextlib.asynccontextmanager
async def service(node):
    # A singleton started at boot: every node asks, one gets it.
    await node.registry.spawn("counter", Counter, if_exists="return")
    (MARKS / f"{{node.name}}.started").write_text(str(len(node.nodes())))
    yield
    (MARKS / f"{{node.name}}.stopped").write_text(str(len(node.nodes())))
    await asyncio.sleep(1.0)  # a slow shutdown: the node keeps answering probes meanwhile


async def broken(node):
    raise RuntimeError("no database")


not_callable = 42
"""


def readyz(node: LabNode) -> int:
    try:
        with urllib.request.urlopen(node.url("/readyz"), timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def write_service(tmp_path: Path) -> tuple[Path, Path]:
    app_dir, marks = tmp_path / "svc", tmp_path / "marks"
    app_dir.mkdir()
    marks.mkdir()
    (app_dir / "counter_service.py").write_text(textwrap.dedent(SERVICE.format(marks=str(marks))))
    return app_dir, marks


def declare(
    lab: Lab, names: list[str], index: int, app_dir: Path, app: str, **node: Any
) -> LabNode:
    declared = declare_listed(lab, names, index, **node)
    declared.extra_args = ("--app", app, "--app-dir", str(app_dir))
    return declared


async def test_the_app_runs_once_the_node_is_ready_and_stops_before_it_leaves(
    lab: Lab, tmp_path: Path
) -> None:
    app_dir, marks = write_service(tmp_path)
    names = [f"s{i}@{lab.address()}" for i in range(2)]
    first = declare(lab, names, 0, app_dir, "counter_service:service", ready={"min_peers": 1})
    second = declare(lab, names, 1, app_dir, "counter_service:service", ready={"min_peers": 1})
    await lab.start([first])
    # min_peers 1: alone, the node waits, and the app has not been called.
    assert await asyncio.to_thread(readyz, first) == 503
    assert not (marks / f"{first.name}.started").exists()
    await lab.start([second])

    async def both_ready() -> bool:
        codes = [await asyncio.to_thread(readyz, n) for n in (first, second)]
        return codes == [200, 200]

    await lab.until(both_ready, timeout=WITHIN, what="both nodes ready with their app")
    for node in (first, second):
        assert (marks / f"{node.name}.started").read_text() == "1"  # it saw its peer
    # The singleton is registered once in the cluster, whichever node started it.
    for node in (first, second):
        assert (await lab.status(node))["registry"]["names"] == 1

    lab.send_signal(second, signal.SIGTERM)

    async def unready_while_stopping() -> bool:
        return await asyncio.to_thread(readyz, second) == 503

    await lab.until(unready_while_stopping, timeout=WITHIN, what="503 once SIGTERM arrived")
    assert second.running  # still shutting down: the app is being exited
    assert await lab.wait_exit(second) == 0
    # The app was exited while the node was still in the cluster, before it left.
    assert (marks / f"{second.name}.stopped").read_text() == "1"
    assert await asyncio.to_thread(readyz, first) == 200


async def test_an_app_that_fails_at_start_exits_1_and_the_node_leaves(
    lab: Lab, tmp_path: Path
) -> None:
    app_dir, _ = write_service(tmp_path)
    names = [f"f0@{lab.address()}"]
    node = declare(lab, names, 0, app_dir, "counter_service:broken")
    node.spawn()
    assert await lab.wait_exit(node, timeout=WITHIN) == 1


GC_SERVICE = """
import contextlib
import gc
import pathlib

if {own}:
    gc.set_threshold(1234, 5, 6)  # the app's own, at import


@contextlib.asynccontextmanager
async def service(node):
    pathlib.Path({mark!r}).write_text(repr(gc.get_threshold()))
    yield
"""


async def test_pycluster_run_enlarges_the_young_generation_unless_the_app_sets_its_own(
    lab: Lab, tmp_path: Path
) -> None:
    app_dir = tmp_path / "gc"
    app_dir.mkdir()
    seen: dict[str, str] = {}
    for module, own in [("gc_default", False), ("gc_own", True)]:
        mark = tmp_path / module
        (app_dir / f"{module}.py").write_text(GC_SERVICE.format(own=own, mark=str(mark)))
        node = declare(lab, [f"{module}@{lab.address()}"], 0, app_dir, f"{module}:service")
        node.spawn()

        async def ran(mark: Path = mark) -> bool:
            return await asyncio.to_thread(mark.exists)

        await lab.until(ran, timeout=WITHIN, what=f"{module} ran")
        seen[module] = mark.read_text()
        lab.send_signal(node, signal.SIGTERM)
        assert await lab.wait_exit(node, timeout=WITHIN) == 0
    assert seen == {"gc_default": repr((GC_FIRST_THRESHOLD, 10, 10)), "gc_own": "(1234, 5, 6)"}


def check(config: Path, app_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pycluster", "check", str(config), "--app-dir", str(app_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_resolves_the_app_without_running_it(tmp_path: Path) -> None:
    app_dir, marks = write_service(tmp_path)
    config = tmp_path / "node.yaml"
    for app, expected in [
        ("counter_service:service", None),
        ("counter_service:missing", "app: module 'counter_service' has no attribute 'missing'"),
        ("no_such_module:service", "app: module 'no_such_module' not found"),
        ("counter_service:not_callable", "app: counter_service:not_callable is a int"),
    ]:
        config.write_text(f"node:\n  name: a@127.0.0.1\napp: {app!r}\n")
        result = check(config, app_dir)
        if expected is None:
            assert result.returncode == 0, result.stderr
        else:
            assert result.returncode == 2
            assert expected in result.stderr
    assert list(marks.iterdir()) == []  # resolved, never called
