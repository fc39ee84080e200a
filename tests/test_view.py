"""The cluster view (pycluster.view) over an in-memory cluster, and its HTTP side: the
live page's files, /view, /view/names, /view/groups, and ``node.http.token``. Real
sockets on 127.0.57.x for the HTTP part. The page in a real browser: tests/cluster/test_page.py.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import pycluster
from pycluster import Actor, ConfigError, load_config, view
from pycluster.http import HttpEndpoints
from pycluster.node import Node
from pycluster.testing import Cluster, cluster, until

HOST = "127.0.57.2"
PORT = 9257
TOKEN = "page-token-0123456789"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


class Idle(Actor):
    async def handle_call(self, message: Any) -> Any:
        return message


def by_name(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in snapshot["nodes"]}


async def fresh(node: Node) -> dict[str, Any]:
    """A snapshot built after this call (the cached one may be up to a second old)."""
    node.view._built = -float("inf")
    return await node.view.snapshot()


@pytest.fixture
async def three() -> AsyncIterator[Cluster]:
    async with cluster(3, config={"node": {"net_tick_timeout": 1}}) as made:
        yield made


async def test_the_snapshot_shows_every_node_with_its_facts_and_links(three: Cluster) -> None:
    a, b, _ = three.nodes
    snapshot = await a.view.snapshot()
    assert snapshot["node"] == a.name
    nodes = by_name(snapshot)
    assert sorted(nodes) == sorted(n.name for n in three.nodes)
    for node in three.nodes:
        entry = nodes[node.name]
        assert entry["state"] == "up"
        assert entry["answered"] is True
        assert entry["error"] is None
        assert entry["self"] is (node is a)
        assert entry["incarnation"] == node.incarnation.hex()
        assert entry["peers"] == sorted(n.name for n in three.nodes if n is not node)
        assert entry["uptime"] >= 0
        assert entry["lag"] is None or entry["lag"] >= 0
        assert entry["tick_timeout"] == 1
        assert sorted(entry["ticks"]) == entry["peers"]
        # Tick health: how long each peer has been silent, well within the tick timeout.
        assert all(0 <= tick["silent"] < 1 for tick in entry["ticks"].values()), entry
    assert nodes[a.name]["rtt"] is None
    assert nodes[b.name]["rtt"] is not None
    assert snapshot["registry"]["names"] == 0
    assert snapshot["topologies"] == {}


async def test_the_snapshot_is_built_once_a_second_and_shared(three: Cluster) -> None:
    a = three.nodes[0]
    calls = 0
    call = a.transport.call

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await call(*args, **kwargs)

    a.transport.call = counted  # type: ignore[method-assign]
    first, *others = await asyncio.gather(*(a.view.snapshot() for _ in range(10)))
    assert all(other is first for other in others)
    assert calls == 2  # one build: one question to each of the two peers
    assert await a.view.snapshot() is first
    a.view._built -= view.REBUILD_INTERVAL
    assert await a.view.snapshot() is not first
    assert calls == 4


async def test_a_killed_node_is_shown_down_with_the_reason_and_an_event(three: Cluster) -> None:
    a, b, c = three.nodes
    await a.view.snapshot()
    await three.kill(c)
    await until(lambda: c.name not in a.nodes(), 5, "a sees c down")
    await asyncio.sleep(view.MIN_REBUILD_GAP)  # a node event lets it rebuild this soon
    snapshot = await a.view.snapshot()
    entry = by_name(snapshot)[c.name]
    assert entry["state"] == "down"
    assert entry["answered"] is False
    assert entry["reason"] is not None
    assert entry["down_since"] is not None
    assert by_name(snapshot)[b.name]["peers"] == [a.name]
    downs = [e for e in snapshot["events"] if e["kind"] == "nodedown"]
    assert [(e["peer"], e["reason"]) for e in downs] == [(c.name, entry["reason"])]


async def test_down_nodes_and_events_are_bounded(
    three: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _, c = three.nodes
    for index in range(view.EVENT_CAPACITY + 10):
        a.view._record("nodeup", f"event {index}")
    events = (await fresh(a))["events"]
    assert len(events) == view.EVENT_CAPACITY
    assert events[-1]["text"] == f"event {view.EVENT_CAPACITY + 9}"
    await three.kill(c)
    await until(lambda: c.name not in a.nodes(), 5, "a sees c down")
    assert by_name(await fresh(a))[c.name]["state"] == "down"
    monkeypatch.setattr(view, "DOWN_MEMORY", 0.0)  # as if 5 minutes had gone by
    assert c.name not in by_name(await fresh(a))


async def test_a_partial_partition_shows_the_missing_link(three: Cluster) -> None:
    a, b, c = three.nodes
    three.network.partition([a.name], [b.name])
    await until(lambda: b.name not in a.nodes() and a.name not in b.nodes(), 5, "a, b apart")
    nodes = by_name(await fresh(c))
    assert nodes[c.name]["peers"] == sorted([a.name, b.name])
    assert nodes[a.name]["peers"] == [c.name]
    assert nodes[b.name]["peers"] == [c.name]
    # From a's side, b is down (not connected to a), yet c still lists it.
    from_a = by_name(await fresh(a))
    assert from_a[b.name]["state"] == "down"
    assert b.name in from_a[c.name]["peers"]


async def test_a_peer_that_does_not_answer_is_shown_as_such(three: Cluster) -> None:
    a, b, _ = three.nodes
    b.unregister_mailbox(view.SELF_MAILBOX)
    entry = by_name(await fresh(a))[b.name]
    assert entry["state"] == "up"
    assert entry["answered"] is False
    assert entry["peers"] is None
    assert entry["error"]


async def test_the_snapshot_is_served_to_hidden_clients_as_msgpack(three: Cluster) -> None:
    a, b, _ = three.nodes
    snapshot = await a.call(b.name, view.VIEW_MAILBOX, None)
    assert snapshot["node"] == b.name
    assert sorted(e["name"] for e in snapshot["nodes"]) == sorted(n.name for n in three.nodes)


async def test_ring_handoffs_are_events(three: Cluster) -> None:
    a = three.nodes[0]
    await a.registry.spawn("mover", Idle, placement="ring")
    ref = a.registry.whereis("mover")
    assert ref is not None
    holder = next(n for n in three.nodes if n.name == ref.node)
    watcher = next(n for n in three.nodes if n is not holder)
    await holder.stop()  # a graceful leave hands its ring actors over first

    def moved() -> bool:
        found = watcher.registry.whereis("mover")
        return found is not None and found.node != holder.name

    await until(moved, 10, "the ring actor moved")
    events = (await fresh(watcher))["events"]
    (handoff,) = [e for e in events if e["kind"] in ("handoff", "ring_restart")]
    assert handoff["kind"] == "handoff"
    assert (handoff["name"], handoff["source"]) == ("mover", holder.name)
    assert handoff["target"] == watcher.registry.whereis("mover").node  # type: ignore[union-attr]


async def test_name_conflicts_are_events(three: Cluster) -> None:
    a, b, c = three.nodes
    await three.partition([a], [b, c])
    await a.registry.spawn(HOSTILE, Idle)
    await b.registry.spawn(HOSTILE, Idle)
    await three.heal()

    def conflicted() -> bool:
        return any(e["kind"] == "name_conflict" for e in c.view._events)

    await until(conflicted, 5, "c records the conflict")
    (conflict,) = [e for e in (await fresh(c))["events"] if e["kind"] == "name_conflict"]
    holder = c.registry.whereis(HOSTILE)
    assert holder is not None
    assert conflict["name"] == HOSTILE
    assert conflict["winner"] == holder.node
    assert {conflict["winner"], conflict["loser"]} == {a.name, b.name}


async def test_names_are_served_a_filtered_page_at_a_time(three: Cluster) -> None:
    a, b, _ = three.nodes
    actor = b.actors.spawn(Idle)
    for index in range(1000):
        await b.registry.register(f"svc-{index:04}", actor, meta={"i": index})
    await b.registry.scope("tenant").register("svc-scoped", actor)
    await b.registry.register(HOSTILE, actor, meta=HOSTILE)
    await until(lambda: len(a.registry.backend.registered()) == 1002, 5, "a has every name")
    a.view._names_at = -float("inf")

    page = a.view.names_page("", 0, 100)
    assert (page["total"], page["matched"], page["offset"], page["limit"]) == (1002, 1002, 0, 100)
    assert len(page["names"]) == 100
    assert page["names"][0]["name"] == HOSTILE  # "<" sorts before "s"
    assert page["names"][0]["meta"] == HOSTILE
    assert page["names"][1] == {
        "scope": "",
        "name": "svc-0000",
        "node": b.name,
        "actor": actor.id,
        "meta": '{"i": 0}',
        "placement": "direct",
        "owner": None,
    }
    assert a.view.names_page("", 0, 10_000)["limit"] == view.MAX_PAGE
    assert a.view.names_page("", -5, 0)["offset"] == 0
    filtered = a.view.names_page("SVC-09", 0, 200)
    assert filtered["matched"] == 100
    assert [r["name"] for r in filtered["names"]] == [f"svc-{i:04}" for i in range(900, 1000)]
    last = a.view.names_page("svc", 999, 200)
    assert [(r["scope"], r["name"]) for r in last["names"]] == [
        ("", "svc-0999"),
        ("tenant", "svc-scoped"),
    ]
    assert a.view.names_page("tenant")["names"][0]["scope"] == "tenant"
    summary = (await fresh(a))["registry"]
    assert summary["names"] == 1002
    assert summary["names_by_node"] == {b.name: 1002}


async def test_groups_are_served_a_page_at_a_time(three: Cluster) -> None:
    a, b, c = three.nodes
    refs = [node.actors.spawn(Idle) for node in (b, c) for _ in range(15)]
    for ref in refs:
        await a.registry.join("workers", ref, meta={"w": ref.id})
    await a.registry.join("other", refs[0])
    await until(lambda: a.registry.count("workers") == 30, 5, "a sees every member")
    page = a.view.groups_page("work")
    assert page["matched"] == 1
    (group,) = page["groups"]
    assert group["name"] == "workers"
    assert group["count"] == 30
    assert len(group["members"]) == view.MAX_GROUP_MEMBERS
    assert group["members"][0]["meta"] is not None
    summary = (await fresh(a))["registry"]
    assert (summary["groups"], summary["members"]) == (2, 31)


def test_metadata_is_shown_as_bounded_text() -> None:
    assert view._meta_text(None) is None
    assert view._meta_text({"a": [1, b"x"]}) == '{"a": [1, "b\'x\'"]}'
    assert view._meta_text({(1, 2): 3}) == "{(1, 2): 3}"
    long = view._meta_text("x" * 10_000)
    assert long is not None
    assert len(long) == view.MAX_TEXT


# -- HTTP -----------------------------------------------------------------------------------


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    config = load_config({"node": {"name": f"v@{HOST}"}}, env={})
    async with Node(config, cookie="view-test-cookie-0123") as started:
        yield started


async def get(path: str, token: str | None = None) -> tuple[int, str, dict[str, str]]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{HOST}:{PORT}{path}", headers=headers) as response,
    ):
        return response.status, await response.text(), dict(response.headers)


async def serve(node: Node, token: str | None) -> HttpEndpoints:
    endpoints = HttpEndpoints(node, HOST, PORT, view=node.view, token=token)
    await endpoints.start()
    return endpoints


async def test_the_page_and_its_data_are_served(node: Node) -> None:
    endpoints = await serve(node, None)
    try:
        status, html, headers = await get("/")
        assert status == 200
        assert headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert '<script src="/page/page.js"' in html
        for name, kind in (("page.js", "text/javascript"), ("page.css", "text/css")):
            status, _, headers = await get(f"/page/{name}")
            assert (status, headers["Content-Type"].split(";")[0]) == (200, kind)
        assert (await get("/page/../node.py"))[0] == 404
        assert (await get("/page/secret.txt"))[0] == 404
        status, body, _ = await get("/view")
        assert status == 200
        assert f'"node": "{node.name}"' in body
        assert (await get("/view/names?q=x&offset=0&limit=5"))[0] == 200
        assert (await get("/view/groups"))[0] == 200
        assert (await get("/view/names?offset=many"))[0] == 400
        async with aiohttp.ClientSession() as session:
            for path in ("/", "/view", "/view/names"):
                async with session.post(f"http://{HOST}:{PORT}{path}") as response:
                    assert response.status == 405, path
    finally:
        await endpoints.stop()


async def test_the_token_guards_every_endpoint_but_the_probes_and_the_page_files(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    endpoints = await serve(node, f"  {TOKEN}\n")  # surrounding whitespace is not the token's
    try:
        for path in ("/healthz", "/readyz", "/", "/page/page.js", "/page/page.css"):
            assert (await get(path))[0] == 200, path
        for path in ("/status", "/metrics", "/view", "/view/names", "/view/groups"):
            status, _, headers = await get(path)
            assert status == 401, path
            assert headers["WWW-Authenticate"].startswith("Bearer")
            assert (await get(path, TOKEN[:-1]))[0] == 401, path
            assert (await get(path, TOKEN + "x"))[0] == 401, path
            assert (await get(path, "é" + TOKEN))[0] == 401, path
            assert (await get(path, TOKEN))[0] == 200, path
    finally:
        await endpoints.stop()
    assert TOKEN not in caplog.text


def test_the_token_is_checked_and_hidden_in_config_errors() -> None:
    def config(token: object) -> pycluster.Config:
        return load_config(
            {"node": {"name": "a@127.0.0.1", "http": {"port": 9200, "token": token}}}, env={}
        )

    assert config(TOKEN).node.http is not None
    with pytest.raises(ConfigError) as raised:
        config("short-secret")
    assert "node.http.token" in str(raised.value)
    assert "short-secret" not in str(raised.value)
    assert TOKEN not in repr(config(TOKEN))


def test_the_page_never_parses_data_as_html() -> None:
    """Escaping by construction: no API that parses HTML from a string (the browser test
    also renders a hostile name)."""
    page = Path(pycluster.__file__).parent / "page"
    script = (page / "page.js").read_text()
    for api in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert api not in script, api
    # Nothing from elsewhere: no CDN, works offline.
    for name in ("index.html", "page.js", "page.css"):
        assert not re.search(r"(https?:)?//[a-z]", (page / name).read_text()), name


class Stuck(Actor):
    """Takes its first cast and waits there, so the ones after it queue up."""

    def __init__(self, release: asyncio.Event) -> None:
        self.release = release

    async def handle_cast(self, message: Any) -> None:
        await self.release.wait()


async def test_each_node_tells_its_actors_and_the_busiest_ones(three: Cluster) -> None:
    a, b, _ = three.nodes
    release = asyncio.Event()
    stuck = await b.registry.spawn("stuck", Stuck, release)
    for i in range(6):
        await a.registry.cast(stuck, i)
    await until(lambda: b.actors.busiest() == [("stuck", 5)], 5, "five casts queued")
    nodes = by_name(await fresh(a))
    assert nodes[b.name]["busiest"] == [["stuck", 5]]
    assert nodes[b.name]["actors"] == len(b.actors.refs()) >= 1
    assert nodes[a.name]["busiest"] == []
    from pycluster.top import plain

    assert f"  5 queued: stuck on {b.name}" in plain(await fresh(a)).splitlines()
    release.set()
    await until(lambda: b.actors.busiest() == [], 5, "the queue drained")
    await b.actors.stop(stuck)


async def test_tick_health_shows_a_frozen_peer_growing_silent() -> None:
    async with cluster(3, config={"node": {"net_tick_timeout": 3}}) as c:
        a, b, _ = c.nodes
        await c.pause(b)
        await until(lambda: (a.transport.silence(b.name) or 0) > 1.0, 5, "b silent for 1 s")
        nodes = by_name(await fresh(a))
        assert nodes[a.name]["ticks"][b.name]["silent"] > 1.0
        await c.resume(b)
        await until(lambda: (a.transport.silence(b.name) or 9) < 0.5, 5, "b heard again")
