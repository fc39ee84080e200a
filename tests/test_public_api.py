"""The public surface is exactly ``pycluster.__all__``, and users' code needs nothing else."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import pycluster
import pycluster.actors

ROOT = Path(__file__).parent.parent
INNER_IMPORT = re.compile(r"^\s*from pycluster\.(?!testing\b|strategies\b)[a-z_.]+ import", re.M)


def test_every_public_name_exists_and_nothing_else_is_promised() -> None:
    assert sorted(pycluster.__all__) == sorted(set(pycluster.__all__))
    for name in pycluster.__all__:
        assert hasattr(pycluster, name), name
    # What an application calls or catches when it talks to the cluster.
    for name in (
        "Node",
        "Actor",
        "ActorRef",
        "AlreadyStarted",
        "AlreadyRegistered",
        "NotRegistered",
        "NotConnected",
        "RemoteError",
        "setting",
        "checks",
        "RegistryBackend",
        "ClaimFailed",
        "Codec",
        # How an embedded node logs as `pycluster run --log-format json` does.
        "configure_logging",
        "JsonFormatter",
        # The two restart policies, by distinct names.
        "ActorRestartPolicy",
        "TopologyRestartPolicy",
        # What a strategy or registry backend plugin needs.
        "Strategy",
        "Topology",
        "parse_node_name",
        "NodeName",
        "NodeNameError",
        "PollSchedule",
        "poll",
        "Throttle",
        "Transport",
        "Entry",
        "Resolve",
        "hookimpl",
    ):
        assert name in pycluster.__all__, name
    for internal in ("Supervisor", "Plan", "InMemoryMembership", "RestartPolicy"):
        assert internal not in pycluster.__all__, internal


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        (pycluster, "RestartPolicy", pycluster.TopologyRestartPolicy),
        (pycluster.actors, "RestartPolicy", pycluster.ActorRestartPolicy),
        (pycluster, "Supervisor", None),
        (pycluster, "Plan", None),
        (pycluster, "InMemoryMembership", None),
    ],
)
def test_names_that_moved_keep_working_for_a_release_with_a_warning(
    module: object, old: str, new: object
) -> None:
    with pytest.warns(DeprecationWarning, match=old):
        value = getattr(module, old)
    assert value is new or (new is None and value.__name__ == old)


def test_strategies_and_the_etcd_plugin_use_only_the_public_api() -> None:
    """Built-in strategies and the etcd plugin import ``pycluster`` itself (and their own
    modules), never its internals: a third party's plugin can do all they do."""
    offenders = []
    for folder, own in (
        ("strategies/pycluster/strategies", "pycluster.strategies"),
        ("plugins/pycluster-etcd/src/pycluster_etcd", "pycluster_etcd"),
    ):
        for path in ROOT.joinpath(folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                for name in names:
                    inner = name.startswith("pycluster.") and not name.startswith(own)
                    if inner:
                        offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def test_examples_and_docs_import_only_from_pycluster() -> None:
    files = [*ROOT.joinpath("examples").rglob("*.py"), *ROOT.joinpath("docs").glob("*.md")]
    offenders = [str(f.relative_to(ROOT)) for f in files if INNER_IMPORT.search(f.read_text())]
    assert offenders == []
