"""Readiness that means something: ``node.ready.min_peers`` gates the first readiness only,
applications add their own checks, and ``/readyz`` answers JSON saying what fails."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from pycluster import load_config
from pycluster.node import Node
from pycluster.transport.memory import MemoryNetwork
from tests.conftest import eventually

COOKIE = "readiness-test-cookie"


def make(name: str, network: MemoryNetwork | None = None, **node: Any) -> Node:
    config = load_config({"node": {"name": name, **node}}, env={})
    return Node(config, cookie=COOKIE, network=network)


async def test_min_peers_gates_the_first_readiness_only() -> None:
    network = MemoryNetwork()
    a = make("a@mem", network, ready={"min_peers": 1})
    b = make("b@mem", network)
    async with a, b:
        assert not a.ready()
        answer = await a.readiness()
        assert answer == {
            "ready": False,
            "checks": {
                "node": "ok",
                "peers": "0 of the 1 peers node.ready.min_peers asks for",
                "registry": "ok",
            },
        }
        assert b.ready()  # min_peers 0: ready once listening
        assert await a.connect("b@mem")
        await eventually(a.ready)
        assert await a.readiness() == {"ready": True, "checks": {"node": "ok", "registry": "ok"}}
        network.kill("b@mem")
        await eventually(lambda: a.nodes() == [])
        assert a.ready()  # a partition must not empty a Service


async def test_application_checks_decide_readyz_too() -> None:
    state = {"warm": False}

    async def cache_warm() -> bool:
        await asyncio.sleep(0)
        return state["warm"]

    def database() -> bool:
        raise ConnectionError("refused")

    async def slow() -> bool:
        await asyncio.sleep(10)
        return True

    async with make("a@mem", MemoryNetwork()) as a:
        a.add_readiness_check("cache", cache_warm)
        a.add_readiness_check("database", database)
        a.add_readiness_check("slow", slow, timeout=0.05)
        answer = await a.readiness()
        assert answer["ready"] is False
        assert answer["checks"] == {
            "node": "ok",
            "registry": "ok",
            "cache": "failed",
            "database": "raised ConnectionError: refused",
            "slow": "no answer within 0.05 s",
        }
        assert a.ready()  # the node's own conditions hold
        state["warm"] = True
        a.add_readiness_check("database", lambda: True)  # replaces the failing one
        a.add_readiness_check("slow", lambda: True)
        assert await a.readiness() == {
            "ready": True,
            "checks": {
                "node": "ok",
                "registry": "ok",
                "cache": "ok",
                "database": "ok",
                "slow": "ok",
            },
        }
        with pytest.raises(ValueError, match="timeout"):
            a.add_readiness_check("bad", lambda: True, timeout=0)


async def test_readyz_answers_json_with_the_failing_checks() -> None:
    node = make("a@127.0.42.2", http={"port": 9211}, ready={"min_peers": 0})
    async with node, aiohttp.ClientSession() as session:
        url = "http://127.0.42.2:9211/readyz"
        async with session.get(url) as response:
            assert response.status == 200
            assert await response.json() == {
                "ready": True,
                "checks": {"node": "ok", "registry": "ok"},
            }
        node.add_readiness_check("migrations", lambda: False)
        async with session.get(url) as response:
            assert response.status == 503
            body = await response.json()
            assert body["ready"] is False
            assert body["checks"]["migrations"] == "failed"


def test_min_peers_is_checked_in_config() -> None:
    from pycluster import ConfigError

    with pytest.raises(ConfigError, match=r"node\.ready\.min_peers"):
        load_config({"node": {"name": "a@127.0.0.1", "ready": {"min_peers": -1}}}, env={})
