"""The ``pycluster`` command: check a config, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence

from pycluster.config import Config, ConfigError, load_config
from pycluster.membership import InMemoryNetwork
from pycluster.plugins import PluginError, Plugins
from pycluster.supervisor import Supervisor

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pycluster`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        status: int = args.run(args)
    except (ConfigError, PluginError) as exc:
        print(f"pycluster: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pycluster", description="Form a cluster of Python services."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="validate a config file (exit 2 on problems)")
    check.add_argument("config", metavar="CONFIG", help="path of the YAML config")
    check.set_defaults(run=_check)

    demo = commands.add_parser("demo", help="start local nodes and show them form a cluster")
    demo.add_argument("--nodes", type=_node_count, default=3, help="how many nodes (1-20)")
    demo.set_defaults(run=_demo)
    return parser


def _node_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 20:
        raise argparse.ArgumentTypeError(f"expected a number of nodes from 1 to 20, got {text!r}")
    return int(text)


def _check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(f"{args.config}: ok: {summary(config)}")
    return 0


def summary(config: Config) -> str:
    """One line describing a valid config."""
    topologies = ", ".join(f"{name} ({t.strategy})" for name, t in config.topologies.items())
    registry = config.registry.backend if config.registry else "none"
    count = len(config.topologies)
    return (
        f"node {config.node.name} (port {config.node.port}), registry {registry}, "
        f"{count} topolog{'y' if count == 1 else 'ies'}" + (f": {topologies}" if count else "")
    )


def demo_config(index: int, count: int) -> dict[str, object]:
    """The demo's config for node ``index`` of ``count``, all on loopback addresses."""
    names = [f"demo{i}@127.0.0.{i + 2}" for i in range(count)]
    return {
        "node": {"name": names[index]},
        "topologies": {"demo": {"strategy": "epmd", "config": {"hosts": names}}},
    }


def _demo(args: argparse.Namespace) -> int:
    return asyncio.run(_run_demo(args.nodes))


async def _run_demo(count: int) -> int:
    plugins = Plugins.load()
    configs = [load_config(demo_config(i, count), plugins=plugins) for i in range(count)]
    print(f"pycluster demo: {count} nodes, one topology 'demo' (strategy epmd) listing:")
    for config in configs:
        print(f"  {config.node.name}")
    print("(the nodes run in this process over the in-memory network until TCP lands)")
    network = InMemoryNetwork(plugins)
    supervisors = [
        Supervisor(config.topologies, membership=network.join(config.node.name), plugins=plugins)
        for config in configs
    ]
    started = time.perf_counter()
    for supervisor in supervisors:
        await supervisor.start()
    try:
        deadline = started + 10
        while not all(len(network.links(c.node.name)) == count - 1 for c in configs):
            if time.perf_counter() > deadline:
                print("pycluster demo: the cluster did not form within 10 s", file=sys.stderr)
                return 1
            await asyncio.sleep(0.01)
        elapsed = (time.perf_counter() - started) * 1000
        print(f"cluster formed in {elapsed:.1f} ms:")
        for config in configs:
            peers = ", ".join(network.links(config.node.name)) or "(alone)"
            print(f"  {config.node.name} sees {peers}")
    finally:
        for supervisor in supervisors:
            await supervisor.stop()
    return 0
