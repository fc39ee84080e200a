"""The live page's screenshots in docs/_static, made on a real lab cluster (not by hand).

Starts 5 node processes on 127.0.232.x, registers 1,000 names (with metadata) on them,
some groups and ring-placed actors, opens node 1's page in Debian's headless chromium and
saves ``page-5-nodes.png``; then cuts n1 from n2 (iptables, needs root) and saves n3's
page as ``page-partition.png``, where the missing n1-n2 link shows.

Run: ``.venv/bin/python -m tests.lab.screenshots [--out docs/_static]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from pycluster import load_config
from pycluster.node import Node
from pycluster.registry import ActorRef
from tests.lab.browser import LivePage, browser_available, chromium
from tests.lab.firewall import firewall_available
from tests.lab.lab import Lab
from tests.lab.polling import until

SUBNET = 232
NODES = 5
NAMES = 1000
COUNTER = "pycluster.demo:Counter"
VIEWPORT = {"width": 1500, "height": 1300}


async def populate(lab: Lab, client: Node, count: int) -> None:
    """``count`` names spread over the nodes, groups, and a few ring actors."""
    holders: list[ActorRef] = []
    for index, node in enumerate(lab.nodes):
        answer = await client.call(
            node.name, "$names", ["spawn", f"worker-{index + 1}", COUNTER, [], {}, 5.0, "here"]
        )
        holders.append(answer)
    services = ["billing", "cart", "search", "users", "mail"]
    gate = asyncio.Semaphore(50)

    async def register(i: int) -> None:
        holder = holders[i % len(holders)]
        meta = {"shard": i % 16, "version": f"1.{i % 5}"}
        async with gate:
            await client.registry.register(f"{services[i % 5]}/session-{i:04}", holder, meta=meta)

    await asyncio.gather(*(register(i) for i in range(count - len(holders) - 3)))
    for i in range(3):
        await client.call(
            lab.nodes[i].name, "$names", ["spawn", f"shard-{i}", COUNTER, [], {}, 5.0, "ring"]
        )
    for group, members in (("frontends", holders[:3]), ("indexers", holders[2:])):
        for member in members:
            await client.registry.join(group, member, meta={"zone": member.node[-1]})


async def main(out: Path) -> None:
    reason = browser_available()
    if reason is not None:
        sys.exit(f"cannot make the screenshots: {reason}")
    with tempfile.TemporaryDirectory(prefix="pycluster-screenshots-") as directory:
        async with Lab.open(Path(directory), subnet=SUBNET) as lab:
            nodes = lab.declare(NODES, net_tick_timeout=1.0, verbose=False)
            await lab.start(nodes)
            await lab.wait_mesh(nodes, timeout=20)
            config = load_config({"node": {"name": "screenshots@localhost"}}, env={})
            async with Node(config, cookie=lab.cookie, hidden=True) as client:
                for node in nodes:
                    assert await client.connect(node.name), node.name
                await populate(lab, client, NAMES)
            names = sorted(node.name for node in nodes)
            async with chromium() as browser:
                page = await LivePage.open(browser, nodes[0].url("/"), viewport=VIEWPORT)

                async def complete() -> bool:
                    links = await page.links()
                    shown = await page.page.evaluate(
                        "document.getElementById('names-info').textContent"
                    )
                    return (
                        await page.nodes() == dict.fromkeys(names, "up")
                        and len(links) == NODES * NODES
                        and f"of {NAMES}" in shown
                    )

                await until(complete, timeout=20, what="the page shows 5 nodes, 1,000 names")
                await page.page.screenshot(path=str(out / "page-5-nodes.png"), full_page=True)
                print(f"wrote {out / 'page-5-nodes.png'}")
                if firewall_available() is None:
                    a, b, c = nodes[:3]
                    lab.partition(a, b)
                    third = await LivePage.open(browser, c.url("/"), viewport=VIEWPORT)

                    async def split() -> bool:
                        links = await third.links()
                        return (
                            links.get((a.name, b.name)) == "missing"
                            and links.get((b.name, a.name)) == "missing"
                        )

                    await until(split, timeout=10, what="n3's page shows n1-n2 missing")
                    await third.page.screenshot(path=str(out / "page-partition.png"))
                    print(f"wrote {out / 'page-partition.png'}")
                    lab.heal(a, b)
                else:
                    print("no partition screenshot: " + str(firewall_available()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/_static"))
    directory = parser.parse_args().out
    directory.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(directory))
