from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

import attrs
import pytest

from pycluster import PluginError, Plugins, Strategy, Topology, hookimpl
from pycluster.hookspecs import pycluster_register_strategies


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
    check = subprocess.run(
        [sys.executable, "-m", "pycluster", "check", str(config)],
        env=installed,
        capture_output=True,
        text=True,
        check=False,
    )
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
    gone = subprocess.run(
        [sys.executable, "-m", "pycluster", "check", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert gone.returncode == 2
    known = ", ".join(sorted(Plugins.load().strategies()))
    assert (
        f"topologies.third.strategy: unknown strategy 'thirdparty.reverse' (known: {known})"
        in gone.stderr
    )
