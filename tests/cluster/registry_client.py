"""A hidden client node that drives the lab's nodes' registries through their mailboxes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pycluster import load_config
from pycluster.errors import NotConnected, RemoteError
from pycluster.node import Node
from pycluster.registry import ActorRef
from tests.lab import Lab, LabNode

COUNTER = "pycluster.demo:Counter"


class RegistryClient:
    """Asks lab nodes to spawn, call and report, the way an operator's tool would."""

    def __init__(self, node: Node) -> None:
        self.node = node

    @classmethod
    @asynccontextmanager
    async def open(cls, lab: Lab) -> AsyncIterator[RegistryClient]:
        config = load_config({"node": {"name": "tester@localhost"}}, env={})
        async with Node(config, cookie=lab.cookie, hidden=True, handshake_timeout=2.0) as node:
            yield cls(node)

    async def ask(self, target: LabNode, body: list[Any], timeout: float = 5.0) -> Any:
        """Call ``target``'s ``$names`` mailbox (connecting first)."""
        if not await self.node.connect(target.name):
            raise NotConnected(target.name)
        return await self.node.call(target.name, "$names", body, timeout)

    async def spawn(
        self, via: LabNode, name: str, *, placement: str = "here", timeout: float = 5.0
    ) -> tuple[bool, ActorRef]:
        """Have ``via`` spawn a demo Counter as ``name``: (True, its ref), or (False, the
        ref of the actor already started under that name)."""
        answer = await self.ask(via, ["spawn", name, COUNTER, [], {}, timeout, placement])
        if isinstance(answer, ActorRef):
            return True, answer
        return False, answer["already_started"]

    async def registered(self, via: LabNode) -> dict[str, ActorRef] | None:
        """``via``'s registry, or None if it does not answer."""
        try:
            names: dict[str, ActorRef] = await self.ask(via, ["registered"], timeout=2.0)
        except (NotConnected, TimeoutError, ConnectionError, RemoteError):
            return None
        return names

    async def running(self, via: LabNode) -> list[str]:
        """Names of the actors running on ``via`` (whether registered or not)."""
        names: list[str] = await self.ask(via, ["running"], timeout=2.0)
        return names

    async def call(self, via: LabNode, name: str, message: Any, timeout: float = 2.0) -> Any:
        """Have ``via`` call the actor registered as ``name``."""
        return await self.ask(via, ["call", name, message, timeout], timeout + 1)

    async def wait(self, ref: ActorRef) -> str:
        """Why the actor ``ref`` ended (waits for it)."""
        if not await self.node.connect(ref.node):
            raise NotConnected(ref.node)
        return await self.node.actors.wait(ref)

    async def views(self, nodes: list[LabNode]) -> list[dict[str, ActorRef] | None]:
        """Every node's registry, fetched together."""
        return list(await asyncio.gather(*(self.registered(node) for node in nodes)))
