"""A real headless browser for the live page: Debian's chromium, driven by Playwright.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (``bash
.ci/setup`` installs it), with nothing that reaches the network on its own (no component
updates, no sync, no QUIC). :class:`LivePage` reads what the page shows from its DOM:
the nodes (``data-node``, ``data-state``), the link matrix (``data-from``, ``data-to``,
``data-link``) and the names table, as data, never as pixels.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from playwright.async_api import Browser, Dialog, Page, async_playwright

CHROMIUM = os.environ.get("PYCLUSTER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # the lab runs as root, where chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def browser_available() -> str | None:
    """None if the page can be tested here, else why not."""
    if shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} is not installed (bash .ci/setup installs Debian's chromium)"
    return None


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless chromium, closed on the way out."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


class LivePage:
    """The live page of one node, open in a browser tab."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.prompts: list[str] = []
        """The messages of the prompts the page showed (asking for the token)."""

    @classmethod
    async def open(
        cls,
        browser: Browser,
        url: str,
        *,
        token: str | None = None,
        viewport: dict[str, int] | None = None,
    ) -> LivePage:
        """Open ``url`` in a new tab; answer the page's token prompt with ``token``."""
        page = await browser.new_page(viewport=viewport or {"width": 1400, "height": 1000})
        live = cls(page)

        async def answer(dialog: Dialog) -> None:
            live.prompts.append(dialog.message)
            if token is None:
                await dialog.dismiss()
            else:
                await dialog.accept(token)

        page.on("dialog", answer)
        await page.goto(url)
        return live

    async def ready(self) -> bool:
        """Whether the page has drawn the node's data at least once."""
        return bool(await self.page.evaluate("document.body.dataset.ready === 'true'"))

    async def nodes(self) -> dict[str, str]:
        """``{name: state}`` of the node elements: the name is the element's text."""
        found: list[list[str]] = await self.page.evaluate(
            """() => [...document.querySelectorAll('#nodes [data-node]')].map(
                (e) => [e.dataset.node, e.dataset.state, e.querySelector('.name').textContent])"""
        )
        for attribute, _, text in found:
            assert attribute == text, (attribute, text)
        return {name: state for name, state, _ in found}

    async def links(self) -> dict[tuple[str, str], str]:
        """``{(who sees, who is seen): "up" | "missing" | "unknown" | "self"}``."""
        found: list[list[str]] = await self.page.evaluate(
            """() => [...document.querySelectorAll('#links td[data-link]')].map(
                (e) => [e.dataset.from, e.dataset.to, e.dataset.link])"""
        )
        return {(source, target): link for source, target, link in found}

    async def names(self) -> list[dict[str, Any]]:
        """The rows of the names table: the name cell's text, and how many elements it
        holds (a name parsed as HTML would hold some)."""
        rows: list[dict[str, Any]] = await self.page.evaluate(
            """() => [...document.querySelectorAll('#names tbody tr')].map((row) => ({
                name: row.querySelector('td.name').textContent,
                attribute: row.dataset.name,
                elements: row.querySelector('td.name').children.length,
            }))"""
        )
        return rows

    async def filter_names(self, text: str) -> None:
        """Type ``text`` into the names' filter box."""
        await self.page.fill("#names-filter", text)

    async def close(self) -> None:
        await self.page.close()
