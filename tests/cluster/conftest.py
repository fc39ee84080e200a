"""The ``lab`` fixture, and the node logs shown with every failing cluster test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest

from tests.lab import Lab

LAB = pytest.StashKey[Lab]()


@pytest.fixture
async def lab(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Lab]:
    """A lab in ``tmp_path``; every node it started is stopped after the test."""
    async with Lab.open(tmp_path / "lab") as opened:
        request.node.stash[LAB] = opened
        yield opened


@pytest.fixture
async def gossip_lab(
    request: pytest.FixtureRequest, tmp_path: Path, require_multicast: None
) -> AsyncIterator[Lab]:
    """A lab inside a multicast-capable network namespace of its own (left again
    afterwards), for gossip between node processes."""
    from tests.lab.multicast import multicast_namespace

    with multicast_namespace():
        async with Lab.open(tmp_path / "lab") as opened:
            request.node.stash[LAB] = opened
            yield opened


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    lab = item.stash.get(LAB, None)
    if lab is not None and report.failed:
        report.sections.append((f"lab: node logs ({report.when})", lab.report()))
    return report
