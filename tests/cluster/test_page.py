"""The live page (``GET /``) in a real headless chromium, on real node processes (issue 15).

Three lab nodes on 127.0.231.x: every node appears, with its full name as text; a name
holding ``<script>`` renders as text; a partition between a and b (both still reach c)
shows on c's page as the missing a-b link while c sees both; after ``kill -9`` of b, c's
page shows it down or gone within ``net_tick_timeout`` + 2 s. Everything is read from the
DOM (data attributes, text), polled with deadlines.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.conftest import LAB
from tests.cluster.registry_client import RegistryClient
from tests.lab import Lab
from tests.lab.browser import LivePage, browser_available, chromium
from tests.lab.polling import until

SUBNET = 231
"""127.0.231.0/24: no other test uses it."""
TICK_TIMEOUT = 1.0
HOSTILE = '<script>document.body.dataset.owned = "yes"</script><b>bold</b>'
TOKEN = "lab-page-token-0123456789"

pytestmark = pytest.mark.usefixtures("require_firewall", "require_browser")


@pytest.fixture
def require_browser() -> None:
    reason = browser_available()
    if reason is not None:
        pytest.fail(f"the page's browser tests cannot run here: {reason}")


@pytest.fixture
async def page_lab(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Lab]:
    async with Lab.open(tmp_path / "lab", subnet=SUBNET) as opened:
        request.node.stash[LAB] = opened
        yield opened


async def test_the_page_shows_nodes_links_partitions_and_deaths(page_lab: Lab) -> None:
    lab = page_lab
    nodes = lab.declare(3, net_tick_timeout=TICK_TIMEOUT, retry_interval=0.5)
    a, b, c = nodes
    await lab.start(nodes)
    await lab.wait_mesh(nodes, timeout=15)
    names = sorted(node.name for node in nodes)

    async with RegistryClient.open(lab) as client, chromium() as browser:
        spawned, _ = await client.spawn(a, HOSTILE)
        assert spawned
        page = await LivePage.open(browser, c.url("/"))

        async def all_up() -> bool:
            return await page.nodes() == dict.fromkeys(names, "up")

        await until(all_up, timeout=10, what="c's page shows the three nodes up")

        async def full_mesh() -> bool:
            links = await page.links()
            return all(
                links.get((x, y)) == ("self" if x == y else "up") for x in names for y in names
            )

        await until(full_mesh, timeout=5, what="c's page shows every link")

        async def hostile_row() -> bool:
            return any(row["name"] == HOSTILE for row in await page.names())

        await until(hostile_row, timeout=5, what="the hostile name is listed")
        (row,) = [row for row in await page.names() if row["name"] == HOSTILE]
        assert row == {"name": HOSTILE, "attribute": HOSTILE, "elements": 0}
        assert await page.page.evaluate("document.body.dataset.owned") is None
        assert await page.page.evaluate("document.querySelectorAll('#names b').length") == 0
        # The filter box asks the node for the matching names only.
        await page.filter_names("SCRIPT")

        async def filtered() -> bool:
            return [row["name"] for row in await page.names()] == [HOSTILE]

        await until(filtered, timeout=5, what="the filter keeps the hostile name alone")

        # a and b cut apart, both still reaching c: c's page shows the missing link.
        lab.partition(a, b)

        async def split() -> bool:
            links = await page.links()
            return (
                links.get((a.name, b.name)) == "missing"
                and links.get((b.name, a.name)) == "missing"
                and links.get((c.name, a.name)) == "up"
                and links.get((c.name, b.name)) == "up"
                and links.get((a.name, c.name)) == "up"
                and links.get((b.name, c.name)) == "up"
            )

        await until(split, timeout=TICK_TIMEOUT + 5, what="c's page shows a-b missing")
        assert await page.nodes() == dict.fromkeys(names, "up")
        lab.heal(a, b)
        await lab.wait_mesh(nodes, timeout=15)
        await until(full_mesh, timeout=5, what="c's page shows the healed links")

        # kill -9 b: within the tick timeout + 2 s, c's page shows it down (or gone).
        killed = lab.send_signal(b, signal.SIGKILL)

        async def b_down() -> bool:
            return (await page.nodes()).get(b.name, "down") == "down"

        seen = await until(b_down, timeout=TICK_TIMEOUT + 2, what="c's page shows b down")
        print(f"c's page showed b down {seen - killed:.2f}s after kill -9")
        shown = await page.nodes()
        assert {name: shown.get(name) for name in (a.name, c.name)} == {
            a.name: "up",
            c.name: "up",
        }
        await page.close()


async def test_the_page_asks_for_the_token_once(page_lab: Lab) -> None:
    lab = page_lab
    (declared,) = lab.declare(1)
    config = {"node": {"name": declared.name, "http": {"port": declared.http_port, "token": TOKEN}}}
    lab.nodes.remove(declared)
    node = lab.add(declared.name, declared.address, config, stem="token")
    node.spawn()  # not lab.start: that waits for /status, which now needs the token

    async def healthy() -> bool:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(node.url("/healthz")) as response,
            ):
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await until(healthy, timeout=30, what="the node answers /healthz", interval=0.05)
    async with chromium() as browser:
        refused = await LivePage.open(browser, node.url("/"))

        async def prompted() -> bool:
            return bool(refused.prompts)

        await until(prompted, timeout=10, what="the page asks for the token")
        assert not await refused.ready()
        page = await LivePage.open(browser, node.url("/"), token=TOKEN)

        async def shown() -> bool:
            return await page.nodes() == {node.name: "up"}

        await until(shown, timeout=15, what="the page shows the node once given the token")
        # Stored for the tab: later polls send it without asking again.
        drawn = await page.page.evaluate("document.body.dataset.builtAt")

        async def redrawn() -> bool:
            return await page.page.evaluate("document.body.dataset.builtAt") != drawn

        await until(redrawn, timeout=5, what="the page polls again")
        assert len(page.prompts) == 1, page.prompts
