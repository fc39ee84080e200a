"""``pycluster remote``: an asyncio REPL connected to a running cluster, as a hidden client.

Like ``python -m asyncio`` (top-level ``await`` works), with names at hand for poking the
cluster through one of its nodes, as ``iex --remsh`` does for Elixir: ``node`` (this
hidden client), ``registry`` (its registry: ``registry.spawn(..., on=NODE)`` starts an
actor on a member), ``target`` (the node asked), and the coroutine functions
``whereis(name)``, ``call(name_or_ref, message, timeout=5)``, ``cast(name_or_ref,
message)``, ``nodes()`` and ``status()``. Names are looked up on ``target``; nothing runs
there but the requests of its mailboxes, never code typed here.

The event loop runs in the main thread, holding the client's connections (it answers
ticks while the prompt waits); the console reads and compiles input in a thread of its
own and hands each statement to the loop.
"""

from __future__ import annotations

import ast
import asyncio
import code
import concurrent.futures
import contextlib
import inspect
import signal
import sys
import threading
import types
from typing import Any

from pycluster.actors.ref import ActorRef
from pycluster.errors import NotConnected
from pycluster.node import STATUS_MAILBOX, Node
from pycluster.nodename import DEFAULT_PORT
from pycluster.registry.errors import NotRegistered
from pycluster.registry.messages import NAMES_MAILBOX, RegisteredRequest
from pycluster.status import hidden_client

BANNER = """pycluster remote: connected to {target} as a hidden client.
At hand: node, registry, target, and (await them) whereis(name), call(name, message),
cast(name, message), nodes(), status(). Ctrl-D leaves."""


class Remote:
    """What the REPL's names do: requests to ``target`` through the hidden client."""

    def __init__(self, client: Node, target: str, timeout: float) -> None:
        self.client = client
        self.target = target
        self.timeout = timeout

    async def status(self) -> dict[str, Any]:
        """The target's status (what ``pycluster status --json`` prints)."""
        answer: dict[str, Any] = await self.client.call(
            self.target, STATUS_MAILBOX, None, timeout=self.timeout
        )
        return answer

    async def nodes(self) -> list[str]:
        """The cluster's nodes as the target sees them: itself, then its peers."""
        status = await self.status()
        return [status["node"], *status["nodes"]]

    async def whereis(self, name: str) -> ActorRef | None:
        """The actor registered as ``name``, as the target sees it, or None."""
        request = RegisteredRequest().to_wire()
        names = await self.client.call(self.target, NAMES_MAILBOX, request, self.timeout)
        ref = names.get(name) if isinstance(names, dict) else None
        return ref if isinstance(ref, ActorRef) else None

    async def call(self, target: str | ActorRef, message: Any, timeout: float = 5.0) -> Any:
        """Call the actor registered as ``target`` (through the target node), or the ref
        ``target`` (directly: this client connects to its node)."""
        if isinstance(target, ActorRef):
            await self._reach(target)
            return await self.client.actors.call(target, message, timeout)
        return await self.client.registry.call_via(self.target, target, message, timeout)

    async def cast(self, target: str | ActorRef, message: Any) -> None:
        """Cast to the actor registered as ``target``, or to the ref ``target``."""
        ref = target if isinstance(target, ActorRef) else await self.whereis(target)
        if ref is None:
            raise NotRegistered(str(target))
        await self._reach(ref)
        await self.client.actors.cast(ref, message)

    async def _reach(self, ref: ActorRef) -> None:
        if ref.node not in self.client.nodes() and not await self.client.connect(ref.node):
            raise NotConnected(f"cannot reach {ref.node}, the node of {ref}")

    def names(self) -> dict[str, Any]:
        """The REPL's names."""
        return {
            "__name__": "__console__",
            "__doc__": None,
            "asyncio": asyncio,
            "node": self.client,
            "registry": self.client.registry,
            "target": self.target,
            "whereis": self.whereis,
            "call": self.call,
            "cast": self.cast,
            "nodes": self.nodes,
            "status": self.status,
        }


class Console(code.InteractiveConsole):
    """An interactive console whose statements may ``await``; they run on ``loop``."""

    def __init__(self, names: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(names)
        self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self.loop = loop
        self.current: asyncio.Task[Any] | None = None
        """The statement running on the loop, if it awaits (Ctrl-C cancels it)."""

    def interrupt(self) -> None:
        """Ctrl-C (on the loop's thread): cancel the statement running, if any."""
        if self.current is not None:
            self.current.cancel()

    def runcode(self, code: types.CodeType) -> None:
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def start() -> None:
            try:
                result = types.FunctionType(code, self.locals)()
            except BaseException as exc:
                done.set_exception(exc)
                return
            if not inspect.iscoroutine(result):
                done.set_result(result)
                return
            self.current = self.loop.create_task(result)
            self.current.add_done_callback(lambda task: self._finished(task, done))

        self.loop.call_soon_threadsafe(start)
        try:
            done.result()
        except SystemExit:
            raise
        except KeyboardInterrupt:
            self.write("KeyboardInterrupt\n")
        except BaseException:
            self.showtraceback()

    def _finished(self, task: asyncio.Task[Any], done: concurrent.futures.Future[Any]) -> None:
        self.current = None
        if task.cancelled():
            done.set_exception(KeyboardInterrupt())
        elif (exc := task.exception()) is not None:
            done.set_exception(exc)
        else:
            done.set_result(task.result())


async def run_remote(
    target: str,
    cookie: str | tuple[str, ...],
    *,
    port: int = DEFAULT_PORT,
    timeout: float = 5.0,
) -> int:
    """Connect to ``target`` as a hidden client and run the REPL until it ends (Ctrl-D or
    ``exit()``); the exit status."""
    loop = asyncio.get_running_loop()
    async with hidden_client(target, cookie, port=port, timeout=timeout, role="remote") as client:
        remote = Remote(client, target, timeout)
        await remote.status()  # the target answers: fail here, not at the first statement
        console = Console(remote.names(), loop)
        finished = asyncio.Event()
        status: list[int] = [0]

        def interact() -> None:
            try:
                console.interact(banner=BANNER.format(target=target), exitmsg="")
            except SystemExit as exc:
                status[0] = exc.code if isinstance(exc.code, int) else 0
            finally:
                loop.call_soon_threadsafe(finished.set)

        loop.add_signal_handler(signal.SIGINT, console.interrupt)
        thread = threading.Thread(target=interact, name="pycluster-remote", daemon=True)
        thread.start()
        try:
            await finished.wait()
        finally:
            loop.remove_signal_handler(signal.SIGINT)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        return status[0]
