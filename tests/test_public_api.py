"""The public surface is exactly ``pycluster.__all__``, and users' code needs nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pycluster

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
    ):
        assert name in pycluster.__all__, name


def test_examples_and_docs_import_only_from_pycluster() -> None:
    files = [*ROOT.joinpath("examples").rglob("*.py"), *ROOT.joinpath("docs").glob("*.md")]
    offenders = [str(f.relative_to(ROOT)) for f in files if INNER_IMPORT.search(f.read_text())]
    assert offenders == []
