"""The local_epmd strategy: nodes of one host found through a runtime directory."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycluster import (
    ConfigError,
    InMemoryNetwork,
    Plugins,
    TopologyDisconnect,
    hookimpl,
    load_config,
)
from pycluster.strategies.local_epmd import (
    Entry,
    entry_file_name,
    make_directory,
    parse_entry,
    runtime_dir,
)
from pycluster.supervisor import Supervisor
from tests.conftest import eventually, logged
from tests.test_strategies import counting_supervisor, dropped, supervisor_for

NAMES = [f"n{i}@127.0.0.{i + 2}" for i in range(4)]
UNUSABLE = "unusable_directory"
"""The problem's reason when the run directory cannot be used."""


def full(name: str) -> str:
    """What a node of ``node.port`` 9100 named ``name`` writes in its entry."""
    return f"{name}:9100"


def local(
    name: str,
    run_dir: Path,
    network: InMemoryNetwork,
    plugins: Plugins,
    group: str = "default",
) -> Supervisor:
    config = {"runtime_dir": str(run_dir), "group": group, "polling_interval": 10}
    return supervisor_for(name, {"strategy": "local_epmd", "config": config}, network, plugins)


def entry_path(run_dir: Path, name: str, group: str = "default") -> Path:
    """Where the node named ``name`` (``node.port`` 9100) registers."""
    return run_dir / group / entry_file_name(full(name))


def write_entry(run_dir: Path, file_name: str, content: object, group: str = "default") -> Path:
    """Put an entry in place as another process would: whole, at once."""
    path = run_dir / group / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{file_name}.tmp"
    tmp.write_text(content if isinstance(content, str) else json.dumps(content))
    os.replace(tmp, path)
    return path


def entries(run_dir: Path, group: str = "default") -> list[str]:
    return sorted(p.name for p in (run_dir / group).iterdir())


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The pid of another process that runs until the test ends."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    try:
        yield child.pid
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)


def mesh(network: InMemoryNetwork, names: list[str]) -> bool:
    return all(network.links(n) == sorted(set(names) - {n}) for n in names)


async def test_nodes_of_one_host_form_a_full_mesh_and_unregister_on_stop(
    run_dir: Path, network: InMemoryNetwork, plugins: Plugins
) -> None:
    nodes = [local(name, run_dir, network, plugins) for name in NAMES]
    try:
        for node in nodes:
            await node.start()
        await eventually(lambda: mesh(network, NAMES))
        for name in NAMES:
            assert json.loads(entry_path(run_dir, name).read_text()) == {
                "name": full(name),
                "pid": os.getpid(),
            }
        await nodes[0].stop()
        assert not entry_path(run_dir, NAMES[0]).exists()
        assert entries(run_dir) == sorted(entry_file_name(full(n)) for n in NAMES[1:])
    finally:
        for node in nodes:
            await node.stop()
    assert entries(run_dir) == []
    assert all(s.state == "stopped" for node in nodes for s in node.status().values())


async def test_an_entry_holds_the_full_name_a_node_of_any_node_port_dials(
    run_dir: Path, plugins: Plugins
) -> None:
    """Here node.port is 19100: an entry saying ``n0@127.0.0.2`` would send a reader whose
    node.port is 9100 to port 9100, so the port is written out; the nodes still know
    each other (and themselves) by their canonical names."""
    network = InMemoryNetwork(plugins, port=19100)
    nodes = [local(name, run_dir, network, plugins) for name in NAMES[:2]]
    async with nodes[0], nodes[1]:
        await eventually(lambda: mesh(network, NAMES[:2]))
        for name in NAMES[:2]:
            written = run_dir / "default" / entry_file_name(f"{name}:19100")
            assert json.loads(written.read_text()) == {"name": f"{name}:19100", "pid": os.getpid()}
        assert entries(run_dir) == sorted(entry_file_name(f"{n}:19100") for n in NAMES[:2])
        # Its own entry is itself, not a node to list.
        await eventually(
            lambda: (
                nodes[0].topologies["t"].listed == {NAMES[1]}
                and nodes[1].topologies["t"].listed == {NAMES[0]}
            )
        )


async def test_directories_and_entries_are_private(
    tmp_path: Path, network: InMemoryNetwork, plugins: Plugins
) -> None:
    run_dir = tmp_path / "not" / "yet"
    async with local(NAMES[0], run_dir, network, plugins, group="g1"):
        own = entry_path(run_dir, NAMES[0], group="g1")
        await eventually(own.exists)
        assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(own.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(own.stat().st_mode) == 0o600


async def test_dead_processes_entries_are_ignored_and_removed(
    run_dir: Path, network: InMemoryNetwork, plugins: Plugins, dead_pid: int
) -> None:
    ghost = "ghost@127.0.0.9"
    network.join(ghost)  # reachable: listing it would connect it
    stale = write_entry(run_dir, entry_file_name(ghost), {"name": ghost, "pid": dead_pid})
    nodes = [local(name, run_dir, network, plugins) for name in NAMES[:2]]
    try:
        for node in nodes:
            await node.start()
        await eventually(lambda: not stale.exists() and mesh(network, NAMES[:2]))
        assert network.links(ghost) == []
        assert all(ghost not in node.topologies["t"].listed for node in nodes)
    finally:
        for node in nodes:
            await node.stop()


async def test_bad_entries_are_reported_once_and_skipped(
    run_dir: Path,
    network: InMemoryNetwork,
    plugins: Plugins,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    write_entry(run_dir, "garbage.json", "{not json")
    write_entry(run_dir, "nopid.json", {"name": "x@127.0.0.9"})
    write_entry(run_dir, "badname.json", {"name": "not a node", "pid": os.getpid()})
    write_entry(run_dir, "grouppid.json", {"name": "y@127.0.0.9", "pid": 0})
    write_entry(run_dir, ".hidden.json", "ignored: temporary files start with a dot")
    write_entry(run_dir, "notes.txt", "ignored: not an entry")
    nodes = [local(name, run_dir, network, plugins) for name in NAMES[:2]]
    try:
        for node in nodes:
            await node.start()
        await eventually(lambda: mesh(network, NAMES[:2]))
        # Removing the nodes' own entries and waiting for them to come back proves each
        # node has read the directory again, bad entries still there.
        for _ in range(2):
            for name in NAMES[:2]:
                entry_path(run_dir, name).unlink()
            await eventually(lambda: all(entry_path(run_dir, n).exists() for n in NAMES[:2]))
    finally:
        for node in nodes:
            await node.stop()
    bad = logged(caplog, event="discovery_problem", reason="bad_entries")
    assert len(bad) == 2  # once per node
    # Each bad entry is named.
    for entry in ("badname.json", "garbage.json", "grouppid.json", "nopid.json"):
        assert entry in bad[0].problem
    assert len(logged(caplog, event="registered", again=True)) == 4
    assert entries(run_dir) == [
        ".hidden.json",
        "badname.json",
        "garbage.json",
        "grouppid.json",
        "nopid.json",
        "notes.txt",
    ]


async def test_entries_naming_no_node_are_skipped_and_counted(
    run_dir: Path, network: InMemoryNetwork, plugins: Plugins
) -> None:
    write_entry(run_dir, "digits.json", {"name": "x@h:\u00b2", "pid": os.getpid()})
    write_entry(run_dir, "short.json", {"name": "y@127.1", "pid": os.getpid()})
    config = {"runtime_dir": str(run_dir), "polling_interval": 10}
    topology = {"strategy": "local_epmd", "config": config}
    first, metrics = counting_supervisor(NAMES[0], topology, network, plugins)
    second = local(NAMES[1], run_dir, network, plugins)
    async with first, second:
        await eventually(lambda: mesh(network, NAMES[:2]))
        # Two bad entries at each read of the directory, counted together.
        await eventually(lambda: dropped(metrics, "bad_entry") >= 4)
        assert dropped(metrics, "bad_entry") % 2 == 0
        assert first.status()["t"].crashes == 0


async def test_groups_stay_apart(run_dir: Path, network: InMemoryNetwork, plugins: Plugins) -> None:
    groups = {NAMES[0]: "a", NAMES[1]: "b", NAMES[2]: "a", NAMES[3]: "b"}
    nodes = {name: local(name, run_dir, network, plugins, group) for name, group in groups.items()}
    try:
        for node in nodes.values():
            await node.start()
        await eventually(lambda: mesh(network, NAMES[0::2]) and mesh(network, NAMES[1::2]))
        # Each group's answer names only its own nodes.
        await eventually(
            lambda: all(
                node.topologies["t"].listed
                == {n for n, g in groups.items() if g == groups[name]} - {name}
                for name, node in nodes.items()
            )
        )
        assert entries(run_dir, "a") == sorted(entry_file_name(full(n)) for n in NAMES[0::2])
        assert entries(run_dir, "b") == sorted(entry_file_name(full(n)) for n in NAMES[1::2])
    finally:
        for node in nodes.values():
            await node.stop()


async def test_a_node_whose_entry_goes_is_disconnected_and_kept_out(
    run_dir: Path, network: InMemoryNetwork, plugins: Plugins
) -> None:
    disconnected: list[TopologyDisconnect] = []

    class Spy:
        @hookimpl
        def pycluster_topology_disconnect(self, event: TopologyDisconnect) -> None:
            disconnected.append(event)

    plugins.manager.register(Spy())
    # n3 stands for a node of another process that registered by hand.
    network.join(NAMES[3])
    n3_entry = write_entry(
        run_dir, entry_file_name(NAMES[3]), {"name": NAMES[3], "pid": os.getpid()}
    )
    nodes = [local(name, run_dir, network, plugins) for name in NAMES[:2]]
    try:
        for node in nodes:
            await node.start()
        await eventually(lambda: mesh(network, [*NAMES[:2], NAMES[3]]))
        n3_entry.unlink()
        # The others' answers still list each other: a successful, non-empty answer.
        await eventually(lambda: network.links(NAMES[3]) == [])
        assert mesh(network, NAMES[:2])
        assert all(node.refuses(NAMES[3]) for node in nodes)
        assert sorted(disconnected, key=lambda e: e.node) == [
            TopologyDisconnect(NAMES[0], "t", NAMES[3]),
            TopologyDisconnect(NAMES[1], "t", NAMES[3]),
        ]
        # Registered again: listed and connected again.
        write_entry(run_dir, entry_file_name(NAMES[3]), {"name": NAMES[3], "pid": os.getpid()})
        await eventually(lambda: mesh(network, [*NAMES[:2], NAMES[3]]))
        assert not any(node.refuses(NAMES[3]) for node in nodes)
    finally:
        for node in nodes:
            await node.stop()


async def test_an_entry_another_live_process_holds_is_left_alone(
    run_dir: Path,
    network: InMemoryNetwork,
    plugins: Plugins,
    caplog: pytest.LogCaptureFixture,
    live_pid: int,
    dead_pid: int,
) -> None:
    # A node restarted after kill -9 takes over its stale entry.
    own = write_entry(
        run_dir, entry_file_name(full(NAMES[0])), {"name": full(NAMES[0]), "pid": dead_pid}
    )
    async with local(NAMES[0], run_dir, network, plugins):
        await eventually(lambda: json.loads(own.read_text())["pid"] == os.getpid())
        # Another process with the same node name replaces it: reported, not fought over.
        write_entry(run_dir, own.name, {"name": full(NAMES[0]), "pid": live_pid})
        await eventually(
            lambda: any(
                str(live_pid) in r.problem
                for r in logged(caplog, event="discovery_problem", reason="taken")
            )
        )
    assert json.loads(own.read_text()) == {"name": full(NAMES[0]), "pid": live_pid}


async def test_an_unreadable_directory_changes_nothing_and_recovery_is_logged(
    run_dir: Path,
    network: InMemoryNetwork,
    plugins: Plugins,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    occupy(run_dir)
    network.join(NAMES[1])
    await network.join(NAMES[0]).connect(NAMES[1])
    async with local(NAMES[0], run_dir, network, plugins):
        await eventually(lambda: bool(logged(caplog, reason=UNUSABLE)))
        assert network.links(NAMES[0]) == [NAMES[1]]
        os.remove(run_dir)
        await eventually(lambda: bool(logged(caplog, event="discovery_recovered", reason=UNUSABLE)))
        assert entries(run_dir) == [entry_file_name(full(NAMES[0]))]
        assert network.links(NAMES[0]) == [NAMES[1]]
    assert len(logged(caplog, reason=UNUSABLE, levelno=logging.WARNING)) == 1


def occupy(path: Path) -> None:
    """Put a file where a directory should be: nothing can be created in it or read."""
    path.write_text("in the way")


def test_config_is_checked() -> None:
    def problems(config: dict[str, object]) -> list[str]:
        source = {
            "node": {"name": NAMES[0]},
            "topologies": {"t": {"strategy": "local_epmd", "config": config}},
        }
        with pytest.raises(ConfigError) as info:
            load_config(source, env={})
        return [str(issue) for issue in info.value.issues]

    assert problems({"group": "../x", "runtime_dir": "run", "polling_interval": "fast"}) == [
        "topologies.t.config.runtime_dir: expected an absolute path, got 'run'",
        "topologies.t.config.group: expected letters, digits, '_', '-' or '.', "
        "not starting with '.', got '../x'",
        "topologies.t.config.polling_interval: expected a duration (a number of ms, or "
        "e.g. '500ms', '5s', '1m'), got 'fast'",
    ]
    assert problems({"group": ".hidden", "polling_interval": 0}) == [
        "topologies.t.config.group: expected letters, digits, '_', '-' or '.', "
        "not starting with '.', got '.hidden'",
        "topologies.t.config.polling_interval: expected a positive duration, got 0",
    ]
    config = load_config(
        {"node": {"name": NAMES[0]}, "topologies": {"t": {"strategy": "local_epmd"}}}, env={}
    )
    assert config.topologies["t"].config.runtime_dir is None
    assert config.topologies["t"].config.group == "default"
    assert config.topologies["t"].config.polling_interval == 500


def test_default_runtime_dir() -> None:
    assert runtime_dir(None, {"XDG_RUNTIME_DIR": "/run/user/1000"}) == (
        Path("/run/user/1000/pycluster"),
        False,
    )
    assert runtime_dir(None, {}) == (Path(f"/tmp/pycluster-{os.getuid()}"), True)
    # The XDG spec says to ignore a relative XDG_RUNTIME_DIR.
    assert runtime_dir(None, {"XDG_RUNTIME_DIR": "relative"})[1] is True
    assert runtime_dir("/srv/run", {"XDG_RUNTIME_DIR": "/run/user/1000"}) == (
        Path("/srv/run"),
        False,
    )


def test_a_shared_default_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "pycluster-0"
    base.mkdir()
    base.chmod(0o777)
    with pytest.raises(PermissionError):
        make_directory(base, base / "default", must_own=True)
    assert not (base / "default").exists()
    make_directory(base, base / "default", must_own=False)
    base.chmod(0o700)
    make_directory(base, base / "default", must_own=True)


def test_entry_file_names() -> None:
    assert entry_file_name("app@127.0.0.2") == "app@127.0.0.2.json"
    assert entry_file_name("app@[::1]:9101") == "app@%5B%3A%3A1%5D%3A9101.json"
    long = "a" * 300 + "@host"
    assert len(entry_file_name(long)) <= 205
    assert entry_file_name(long) != entry_file_name("a" * 301 + "@host")


def test_parse_entry() -> None:
    assert parse_entry(b'{"name": "app@[::1]:9101", "pid": 12}') == Entry("app@[::1]:9101", 12)
    for data, problem in [
        (b"\xff", "not valid JSON"),
        (b"[1]", "not a JSON object"),
        (b"[" * 60_000, "not valid JSON"),
        (b'{"pid": 3}', "no 'name' string"),
        (b'{"name": "a@h", "pid": -1}', "no 'pid' process id"),
        (b'{"name": "a@h", "pid": true}', "no 'pid' process id"),
        (b'{"name": "a@h", "pid": 1e3}', "no 'pid' process id"),
        ('{"name": "x@h:\u00b2", "pid": 3}'.encode(), "'x@h:\u00b2' is not a node name"),
        (b'{"name": "x@127.1", "pid": 3}', "'x@127.1' is not a node name"),
    ]:
        with pytest.raises(ValueError, match=problem):
            parse_entry(data)
