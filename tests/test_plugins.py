from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Generator, Iterable
from pathlib import Path

import attrs
import pluggy
import pytest

import pycluster
from pycluster import (
    InMemoryNetwork,
    NodeDown,
    NodeUp,
    PluginError,
    Plugins,
    Strategy,
    Topology,
    hookimpl,
)
from pycluster.hookspecs import pycluster_register_strategies
from pycluster.registry import RegistryBackend
from pycluster.registry.crdt import CrdtRegistry
from tests.conftest import run_cli


@attrs.frozen
class NoConfig:
    pass


class FakeEpmd(Strategy):
    name = "epmd"
    Config = NoConfig

    async def run(self, topology: Topology) -> None:
        return None


class Clash:
    @hookimpl
    def pycluster_register_strategies(self) -> Iterable[type[Strategy]]:
        return [FakeEpmd]


def test_builtin_strategies_register_through_the_public_hook() -> None:
    plugins = Plugins.load(entry_points=False)
    assert {"epmd", "hosts_file", "local_epmd"} <= set(plugins.strategies())
    impls = plugins.manager.hook.pycluster_register_strategies.get_hookimpls()
    assert [impl.plugin_name for impl in impls] == ["pycluster.strategies"]


def test_two_plugins_with_one_strategy_name_is_a_clear_error() -> None:
    plugins = Plugins.load(entry_points=False, extra=[Clash()])
    with pytest.raises(PluginError, match="strategy 'epmd' is provided by two plugins: "):
        plugins.strategies()


def test_hookspecs_are_documented_and_prefixed() -> None:
    from pycluster import hookspecs

    specs = [name for name in dir(hookspecs) if name.startswith("pycluster_")]
    assert len(specs) >= 7
    for name in specs:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), name
    assert pycluster_register_strategies.__annotations__["return"]


def test_the_spec_marker_is_private_and_the_impl_marker_public() -> None:
    from pycluster import hookspecs

    public = {name: getattr(hookspecs, name) for name in dir(hookspecs) if name[0] != "_"}
    assert not [name for name, v in public.items() if isinstance(v, pluggy.HookspecMarker)]
    assert "hookspec" not in pycluster.__all__
    assert isinstance(pycluster.hookimpl, pluggy.HookimplMarker)
    assert "hookimpl" in pycluster.__all__


class Late(Strategy):
    name = "test.late"
    Config = NoConfig

    async def run(self, topology: Topology) -> None:
        return None


class LateRegistry(CrdtRegistry):
    name = "test.late"


class LatePlugin:
    @hookimpl
    def pycluster_register_strategies(self) -> Iterable[type[Strategy]]:
        return [Late]

    @hookimpl
    def pycluster_register_registry_backends(self) -> Iterable[type[RegistryBackend]]:
        return [LateRegistry]


def test_a_strategy_plugin_registered_after_the_first_lookup_is_found() -> None:
    plugins = Plugins.load(entry_points=False)
    assert "test.late" not in plugins.strategies()
    assert "test.late" not in plugins.registry_backends()
    late = LatePlugin()
    plugins.manager.register(late)
    assert plugins.strategies()["test.late"] is Late
    assert plugins.registry_backends()["test.late"] is LateRegistry
    plugins.manager.unregister(late)
    assert "test.late" not in plugins.strategies()
    # Duplicate names are still found among plugins registered late.
    plugins.manager.register(Clash())
    with pytest.raises(PluginError, match="strategy 'epmd' is provided by two plugins: "):
        plugins.strategies()


class HideHostsFile:
    """Wraps each plugin's registration and drops ``hosts_file`` from what it returns."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl(wrapper=True)
    def pycluster_register_strategies(
        self,
    ) -> Generator[None, list[Iterable[type[Strategy]]], list[Iterable[type[Strategy]]]]:
        self.calls += 1
        results = yield
        return [[s for s in result if s.name != "hosts_file"] for result in results]


def test_a_wrapper_sees_each_plugins_registration_call() -> None:
    wrapper = HideHostsFile()
    plugins = Plugins.load(entry_points=False, extra=[wrapper, LatePlugin()])
    strategies = plugins.strategies()
    assert {"epmd", "local_epmd", "test.late"} <= set(strategies)
    assert "hosts_file" not in strategies
    assert wrapper.calls == 2  # one per plugin: pycluster.strategies and LatePlugin


class Listener:
    def __init__(self, name: str, heard: list[tuple[str, object]]) -> None:
        self.name = name
        self.heard = heard

    @hookimpl
    def pycluster_node_up(self, event: NodeUp) -> None:
        self.heard.append((self.name, event))


class Broken:
    @hookimpl
    def pycluster_node_up(self, event: NodeUp) -> None:
        raise ValueError("observer bug")


class Watch:
    """A wrapper recording each call it wraps: its event and its result or exception."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, object]] = []

    @hookimpl(wrapper=True)
    def pycluster_node_up(self, event: NodeUp) -> Generator[None, list[object], list[object]]:
        try:
            result = yield
        except ValueError as exc:
            self.calls.append((event, repr(exc)))
            raise
        self.calls.append((event, result))
        return result


def with_plugins(**named: object) -> Plugins:
    """The built-in plugins, then ``named`` registered in that order under their names."""
    plugins = Plugins.load(entry_points=False)
    for name, plugin in named.items():
        plugins.manager.register(plugin, name)
    return plugins


async def test_a_wrapper_sees_each_lifecycle_call_with_its_result_or_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    heard: list[tuple[str, object]] = []
    watch = Watch()
    plugins = with_plugins(good=Listener("good", heard), broken=Broken(), watch=watch)
    network = InMemoryNetwork(plugins)
    network.join("b@127.0.0.3")
    assert await network.join("a@127.0.0.2").connect("b@127.0.0.3")
    up = NodeUp("a@127.0.0.2", "b@127.0.0.3")
    back = NodeUp("b@127.0.0.3", "a@127.0.0.2")
    # One call per observing plugin (the most recently registered first), each wrapped.
    assert watch.calls == [
        (up, "ValueError('observer bug')"),
        (up, []),
        (back, "ValueError('observer bug')"),
        (back, []),
    ]
    assert heard == [("good", up), ("good", back)]
    logged = [r.getMessage() for r in caplog.records if r.name == "pycluster.plugins"]
    assert logged == ["plugin broken raised in pycluster_node_up"] * 2


def test_an_observer_that_raises_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    heard: list[tuple[str, object]] = []
    plugins = with_plugins(
        first=Listener("first", heard), broken=Broken(), last=Listener("last", heard)
    )
    up = NodeUp("a@127.0.0.2", "b@127.0.0.3")
    plugins.notify("pycluster_node_up", up)
    assert sorted(heard) == [("first", up), ("last", up)]
    [record] = [r for r in caplog.records if r.name == "pycluster.plugins"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "plugin broken raised in pycluster_node_up"
    assert record.exc_info is not None
    assert "observer bug" in str(record.exc_info[1])


class WatchingListener(Watch):
    """Observes ``pycluster_node_up`` and wraps it too."""

    @hookimpl(specname="pycluster_node_up")
    def hear(self, event: NodeUp) -> None:
        self.calls.append((event, "heard"))


def test_a_plugin_that_wraps_and_observes_a_hook_wraps_only_its_own_call() -> None:
    heard: list[tuple[str, object]] = []
    both = WatchingListener()
    plugins = with_plugins(other=Listener("other", heard), both=both)
    up = NodeUp("a@127.0.0.2", "b@127.0.0.3")
    plugins.notify("pycluster_node_up", up)
    assert both.calls == [(up, "heard"), (up, [])]
    assert heard == [("other", up)]


class Eager(Listener):
    @hookimpl(tryfirst=True)
    def pycluster_node_up(self, event: NodeUp) -> None:
        self.heard.append((self.name, event))


def test_observers_are_called_in_pluggys_order() -> None:
    heard: list[tuple[str, object]] = []
    plugins = with_plugins(
        eager=Eager("eager", heard), older=Listener("older", heard), newer=Listener("newer", heard)
    )
    plugins.notify("pycluster_node_up", NodeUp("a@127.0.0.2", "b@127.0.0.3"))
    assert [name for name, _ in heard] == ["eager", "newer", "older"]


def test_hook_call_monitoring_sees_lifecycle_calls() -> None:
    heard: list[tuple[str, object]] = []
    plugins = with_plugins(one=Listener("one", heard))
    calls: list[tuple[str, list[str], object]] = []
    plugins.manager.add_hookcall_monitoring(
        lambda name, impls, kwargs: calls.append(
            (name, [impl.plugin_name for impl in impls], kwargs.get("event"))
        ),
        lambda outcome, name, impls, kwargs: None,
    )
    up = NodeUp("a@127.0.0.2", "b@127.0.0.3")
    down = NodeDown("a@127.0.0.2", "b@127.0.0.3", "tick timeout")
    plugins.notify("pycluster_node_up", up)
    # A hook that no plugin observes is still called once.
    plugins.notify("pycluster_node_down", down)
    assert calls == [("pycluster_node_up", ["one"], up), ("pycluster_node_down", [], down)]
    # A plugin registered later hears the next event.
    plugins.manager.register(Listener("two", heard), "two")
    plugins.notify("pycluster_node_up", up)
    assert calls[2:] == [("pycluster_node_up", ["two"], up), ("pycluster_node_up", ["one"], up)]
    assert heard == [("one", up), ("two", up), ("one", up)]
    # Registration hooks are monitored alike.
    plugins.strategies()
    assert calls[4:] == [("pycluster_register_strategies", ["pycluster.strategies"], None)]


PLUGIN_MODULE = '''
"""A third-party strategy: connects the nodes named in its config, in reverse order."""
from __future__ import annotations

import attrs

import pycluster
from pycluster.config import checks, setting


@attrs.frozen(kw_only=True)
class ReverseConfig:
    peers: tuple[str, ...] = setting(doc="Nodes to connect.", each=checks.node_name)


class Reverse(pycluster.Strategy):
    name = "thirdparty.reverse"
    Config = ReverseConfig

    async def run(self, topology: pycluster.Topology) -> None:
        config: ReverseConfig = topology.config
        while True:
            await topology.apply(list(reversed(config.peers)))
            if not await topology.sleep(0.01):
                return


@pycluster.hookimpl
def pycluster_register_strategies():
    return [Reverse]
'''

PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "pycluster-thirdparty-reverse"
version = "1.0"
dependencies = ["pycluster"]

[tool.setuptools]
py-modules = ["pycluster_thirdparty_reverse"]

[project.entry-points.pycluster]
reverse = "pycluster_thirdparty_reverse"
"""

RUNNER = """
import asyncio, json, sys
import pycluster

async def main():
    plugins = pycluster.Plugins.load()
    config = pycluster.load_config(sys.argv[1], plugins=plugins)
    network = pycluster.InMemoryNetwork(plugins)
    for peer in config.topologies["third"].config.peers:
        network.join(peer)
    supervisor = pycluster.Supervisor(
        config.topologies, membership=network.join(config.node.name), plugins=plugins
    )
    async with supervisor:
        for _ in range(500):
            if len(network.links(config.node.name)) == 2:
                break
            await asyncio.sleep(0.01)
        status = {name: s.to_json() for name, s in supervisor.status().items()}
        print(json.dumps({"nodes": network.links(config.node.name), "status": status}))

asyncio.run(main())
"""


def test_a_pip_installed_plugin_is_found_through_its_entry_point(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    (source / "pycluster_thirdparty_reverse.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    target = tmp_path / "site"
    pip = subprocess.run(
        [
            sys.executable,
            *("-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"),
            *("--no-index", "--target", str(target), str(source)),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "node: {name: me@127.0.0.2}\n"
        "topologies:\n"
        "  third:\n"
        "    strategy: thirdparty.reverse\n"
        "    config: {peers: [a@127.0.0.3, b@127.0.0.4]}\n"
    )
    installed = {**os.environ, "PYTHONPATH": str(target)}
    check = run_cli("check", str(config), env={"PYTHONPATH": str(target)})
    assert check.returncode == 0, check.stderr
    assert "third (thirdparty.reverse)" in check.stdout
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    run = subprocess.run(
        [sys.executable, str(runner), str(config)],
        env=installed,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result = json.loads(run.stdout)
    assert result["nodes"] == ["a@127.0.0.3", "b@127.0.0.4"]
    assert result["status"]["third"]["strategy"] == "thirdparty.reverse"
    assert result["status"]["third"]["state"] == "running"
    # Without the distribution, the same config names an unknown strategy.
    gone = run_cli("check", str(config))
    assert gone.returncode == 2
    known = ", ".join(sorted(Plugins.load().strategies()))
    assert (
        f"topologies.third.strategy: unknown strategy 'thirdparty.reverse' (known: {known})"
        in gone.stderr
    )
