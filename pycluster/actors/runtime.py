"""Running actors on a node: mailboxes, calls and casts from any node, stop, monitor, restart."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import itertools
import logging
import time
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import attrs

from pycluster.actors.actor import Actor, ActorCrashed, ActorHost, ActorRestartPolicy
from pycluster.actors.ref import ActorRef
from pycluster.errors import NotConnected, RemoteError
from pycluster.transport.deadlines import Deadlines
from pycluster.transport.waist import Transport

log = logging.getLogger("pycluster.actors")

ACTOR_MAILBOX = "$actor"
MOVED = "moved"
"""The end reason of an actor handed over to another node."""
DEFAULT_MAILBOX_SIZE = 1000
_NO_STATE: Any = object()
ENDED_MEMORY = 10_000
"""How many ended actors' reasons a node remembers for late wait() calls."""


class NoSuchActor(LookupError):
    """No actor with that reference runs (it ended, or its node restarted)."""


class MailboxFull(RuntimeError):
    """The actor's mailbox is full; a remote message to it was refused."""


@attrs.define
class _Envelope:
    kind: str  # "call" | "cast" | "stop"; "begun" | "crashed" | "wake" (an eager call)
    message: Any
    reply: asyncio.Future[Any] | None = None


_STOP = _Envelope("stop", None)
_WAKE = _Envelope("wake", None)


@attrs.define(eq=False)
class _Running:
    ref: ActorRef
    factory: Callable[[], Actor]
    policy: ActorRestartPolicy
    name: str | None
    queue: asyncio.Queue[_Envelope]
    ended: asyncio.Future[str]
    context: contextvars.Context
    """The context the actor's task runs in (copied from its spawner's, as for any task)."""
    instance: Actor | None = None
    task: asyncio.Task[None] | None = None
    stop_reason: str | None = None
    """Why it was asked to stop; None while it runs."""
    stopped_itself: bool = False
    restarts: collections.deque[float] = attrs.Factory(collections.deque)
    handoff_state: Any = None
    idle: bool = False
    """Waiting for a message with an empty mailbox (a call may then run eagerly)."""
    begun: _Envelope | None = None
    """What an eager call left for the actor's task: its handler, begun, or its crash.
    Taken before anything in the mailbox, and before a stop: it is the message being
    handled."""


class Actors:
    """The actors of one node (``node.actors``), over its transport; refs work from any
    node."""

    def __init__(
        self,
        node: Transport,
        *,
        host: ActorHost,
        mailbox_size: int = DEFAULT_MAILBOX_SIZE,
    ) -> None:
        self._node = node
        self._host = host
        self._mailbox_size = mailbox_size
        self._running: dict[str, _Running] = {}
        # Why recently ended actors ended, so wait() on one that just ended still answers.
        self._ended: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._serial = itertools.count(1)
        self._prefix = node.incarnation.hex()[:12]
        self.end_listeners: list[Callable[[ActorRef, str], None]] = []
        """Called with ``(ref, reason)`` whenever a local actor has ended for good."""
        node.register_mailbox(ACTOR_MAILBOX, self._on_remote)
        durations = node.metrics.call_duration
        self._local_calls = durations.labels("local").observe
        self._remote_calls = durations.labels("remote").observe
        self._deadlines: Deadlines[asyncio.Future[Any]] | None = None

    # -- local lifecycle --------------------------------------------------------------------

    def allocate(self) -> ActorRef:
        """A fresh ref for an actor about to be spawned (e.g. once its name is claimed)."""
        return ActorRef(self._node.name, f"{self._prefix}.{next(self._serial)}")

    def spawn(
        self,
        cls: type[Actor],
        *args: Any,
        name: str | None = None,
        policy: ActorRestartPolicy | None = None,
        ref: ActorRef | None = None,
        state: Any = _NO_STATE,
        **kwargs: Any,
    ) -> ActorRef:
        """Start an actor on this node now; return its ref. ``cls(*args, **kwargs)`` runs
        here, so an exception in ``__init__`` reaches the caller. With ``state`` (what
        :meth:`~pycluster.actors.Actor.handoff` returned on another node),
        ``resume(state)`` runs before ``started()``; a restart after a crash starts
        afresh."""
        ref = ref or self.allocate()
        running = _Running(
            ref=ref,
            factory=lambda: cls(*args, **kwargs),
            policy=policy or ActorRestartPolicy(),
            name=name,
            queue=asyncio.Queue(self._mailbox_size),
            ended=asyncio.get_running_loop().create_future(),
            context=contextvars.copy_context(),
        )
        running.instance = self._prepare(running, running.factory())
        if state is not _NO_STATE:
            running.instance.resume(state)
        self._running[ref.id] = running
        running.task = asyncio.create_task(
            self._live(running), name=f"actor {ref}", context=running.context
        )
        return ref

    def on_end(self, ref: ActorRef, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` once the local actor ``ref`` has ended for good."""
        running = self._running.get(ref.id)
        if running is None:
            callback(self._ended.get(ref.id, "normal"))
            return
        running.ended.add_done_callback(lambda ended: callback(ended.result()))

    def local(self, ref: ActorRef) -> Actor | None:
        """The instance of a running local actor (for tests and handoff)."""
        running = self._running.get(ref.id) if ref.node == self._node.name else None
        return running.instance if running else None

    def refs(self) -> list[ActorRef]:
        """Refs of the actors running on this node."""
        return [running.ref for running in self._running.values()]

    def mailbox_depths(self) -> tuple[int, int, int]:
        """How many actors run here, the messages waiting in their mailboxes in all, and
        in the fullest one (read when ``/metrics`` is scraped)."""
        depths = [running.queue.qsize() for running in self._running.values()]
        return len(depths), sum(depths), max(depths, default=0)

    def busiest(self, count: int = 10) -> list[tuple[str, int]]:
        """The ``count`` actors here with the most messages waiting, fullest first, each
        as (the name it was started under, else its ref; messages waiting); only actors
        with a message waiting."""
        queued = [(r.queue.qsize(), r) for r in self._running.values() if r.queue.qsize()]
        queued.sort(key=lambda item: -item[0])
        return [(running.name or str(running.ref), depth) for depth, running in queued[:count]]

    def names(self) -> list[str]:
        """Names the actors running on this node were started under (sorted; a name twice
        would mean two live actors for it here)."""
        return sorted(r.name for r in self._running.values() if r.name is not None)

    async def stop(self, ref: ActorRef, reason: str = "normal", timeout: float = 5.0) -> str:
        """Stop an actor after the message it is handling; return its end reason."""
        if ref.node != self._node.name:
            result = await self._node.call(
                ref.node, ACTOR_MAILBOX, ["stop", ref.id, reason], timeout
            )
            return str(result)
        running = self._running.get(ref.id)
        if running is None:
            raise NoSuchActor(str(ref))
        self._request_stop(running, reason)
        return await asyncio.wait_for(asyncio.shield(running.ended), timeout)

    async def stop_all(self, reason: str) -> None:
        """Stop every local actor (the node is leaving)."""
        for running in list(self._running.values()):
            self._request_stop(running, reason)
        pending = [r.ended for r in self._running.values()]
        if pending:
            await asyncio.wait(pending, timeout=5.0)

    async def handoff(self, ref: ActorRef, timeout: float = 5.0) -> Any:
        """Stop the local actor ``ref`` for a move (reason ``moved``) once the message it
        is handling is done, and return what its ``handoff()`` gave. Messages still queued
        fail with ActorCrashed, so no caller is told a message was handled that the new
        node will not know about."""
        running = self._alive(ref)
        self._request_stop(running, MOVED)
        await asyncio.wait_for(asyncio.shield(running.ended), timeout)
        return running.handoff_state

    def stop_self(self, ref: ActorRef) -> None:
        """An actor's own request to stop normally (its restart policy still applies)."""
        running = self._running.get(ref.id)
        if running is not None and running.stop_reason is None:
            running.stopped_itself = True
            self._request_stop(running, "normal")

    def _request_stop(self, running: _Running, reason: str) -> None:
        if running.stop_reason is None:
            running.stop_reason = reason
            if not running.queue.full():
                running.queue.put_nowait(_STOP)

    # -- messages ---------------------------------------------------------------------------

    async def call(self, ref: ActorRef, message: Any, timeout: float = 5.0) -> Any:
        """Send ``message`` and return the reply. Raises what the handler raised (remotely:
        RemoteError), TimeoutError, NoSuchActor, or NotConnected. Its duration, failures
        included, goes to ``pycluster_call_duration_seconds``."""
        started = time.perf_counter()
        if ref.node != self._node.name:
            try:
                return await self._node.call(
                    ref.node, ACTOR_MAILBOX, ["call", ref.id, message], timeout
                )
            except RemoteError as exc:
                if exc.type == "NoSuchActor":
                    raise NoSuchActor(str(ref)) from exc
                raise
            finally:
                self._remote_calls(time.perf_counter() - started)
        try:
            running = self._alive(ref)
            loop = asyncio.get_running_loop()
            reply: asyncio.Future[Any] = loop.create_future()
            envelope = _Envelope("call", message, reply)
            if running.queue.full():  # waiting for room counts against the timeout too
                async with asyncio.timeout(timeout):
                    await running.queue.put(envelope)
                    return await reply
            running.queue.put_nowait(envelope)
            # One timer for every local call's timeout, as for remote calls: cheaper than
            # asyncio.timeout() per call, which cost a quarter of a local call.
            deadlines = self._deadlines
            if deadlines is None or deadlines.loop is not loop:
                deadlines = self._deadlines = Deadlines(loop, _expire, _pending)
            deadlines.add(reply, timeout)
            return await reply
        finally:
            self._local_calls(time.perf_counter() - started)

    async def cast(self, ref: ActorRef, message: Any) -> None:
        """Send ``message`` without waiting for it to be handled."""
        if ref.node != self._node.name:
            await self._node.send(ref.node, ACTOR_MAILBOX, ["cast", ref.id, message])
            return
        await self._alive(ref).queue.put(_Envelope("cast", message))

    async def wait(self, ref: ActorRef) -> str:
        """Wait for an actor to end; return why: normal, crashed, node down, name conflict."""
        if ref.node != self._node.name:
            try:
                result = await self._node.call(
                    ref.node, ACTOR_MAILBOX, ["wait", ref.id, None], timeout=365 * 86400
                )
            except NotConnected:
                return "node down"
            except RemoteError as exc:
                if exc.type == "NoSuchActor":
                    raise NoSuchActor(str(ref)) from exc
                raise
            return str(result)
        running = self._running.get(ref.id)
        if running is None:
            return self._ended_reason(ref.id)
        return await asyncio.shield(running.ended)

    def _ended_reason(self, actor_id: str) -> str:
        reason = self._ended.get(actor_id)
        if reason is None:
            raise NoSuchActor(actor_id)
        return reason

    def _alive(self, ref: ActorRef) -> _Running:
        running = self._running.get(ref.id)
        if running is None or running.stop_reason is not None:
            raise NoSuchActor(str(ref))
        return running

    def _on_remote(self, sender: str, body: Any) -> Any:
        if not (isinstance(body, list) and len(body) == 3 and isinstance(body[1], str)):
            raise ValueError("malformed actor message")
        op, actor_id, message = body
        running = self._running.get(actor_id)
        if op == "wait":
            return (
                self._ended_reason(actor_id) if running is None else asyncio.shield(running.ended)
            )
        if running is None or running.stop_reason is not None:
            if op == "cast":
                log.debug("dropped a cast from %s to ended actor %s", sender, actor_id)
                return None
            raise NoSuchActor(actor_id)
        if op == "stop":
            self._request_stop(running, str(message))
            return asyncio.shield(running.ended)
        if op == "cast":
            try:
                running.queue.put_nowait(_Envelope("cast", message))
            except asyncio.QueueFull:
                log.warning("mailbox of %s is full: dropped a cast from %s", running.ref, sender)
            return None
        if op == "call":
            if running.idle and not running.queue.qsize() and asyncio.current_task() is None:
                return self._eager_call(running, message)
            reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            try:
                running.queue.put_nowait(_Envelope("call", message, reply))
            except asyncio.QueueFull:
                raise MailboxFull(f"mailbox of {running.ref} is full") from None
            return reply
        raise ValueError(f"unknown actor operation {str(op)[:40]!r}")

    def _eager_call(self, running: _Running, message: Any) -> Any:
        """Run the handler of a call to an idle actor at once, as the actor's task and in
        its context (the reply leaves without waking the actor); if the handler has to
        wait, the actor's task carries it on from there."""
        assert running.instance is not None
        assert running.task is not None
        loop, task = asyncio.get_running_loop(), running.task
        handler = running.instance.handle_call(message)
        running.idle = False
        _enter_task(loop, task)
        try:
            waiting_on = running.context.run(handler.send, None)
        except StopIteration as done:
            running.idle = True
            return done.value
        except BaseException as exc:
            log.warning("%s crashed: %s: %s", running.ref, type(exc).__name__, exc)
            self._leave_for_task(running, _Envelope("crashed", None))
            raise
        finally:
            _leave_task(loop, task)
        reply: asyncio.Future[Any] = loop.create_future()
        self._leave_for_task(running, _Envelope("begun", _Begun(handler, waiting_on), reply))
        return reply

    @staticmethod
    def _leave_for_task(running: _Running, envelope: _Envelope) -> None:
        """Hand what an eager call left to the actor's task, first of all its messages
        (those the handler queued meanwhile, e.g. its own stop, included)."""
        running.begun = envelope
        if not running.queue.qsize():  # else the task is awake already
            running.queue.put_nowait(_WAKE)

    # -- an actor's life --------------------------------------------------------------------

    def _prepare(self, running: _Running, instance: Actor) -> Actor:
        if not isinstance(instance, Actor):
            raise TypeError(f"{type(instance).__name__} is not an Actor")
        instance.ref = running.ref
        instance.node = self._host
        instance.name = running.name
        instance._runtime = self
        return instance

    async def _live(self, running: _Running) -> None:
        reason = "crashed"
        try:
            while True:
                instance = running.instance
                assert instance is not None
                reason = await self._serve(running, instance)
                if reason == MOVED:
                    try:
                        running.handoff_state = instance.handoff()
                    except Exception:
                        log.exception("%s raised in handoff(); it moves without state", running.ref)
                try:
                    await instance.stopped(reason)
                except Exception:
                    log.exception("%s raised in stopped()", running.ref)
                if not self._restart(running, reason):
                    break
                running.stop_reason, running.stopped_itself = None, False
                try:
                    running.instance = self._prepare(running, running.factory())
                except Exception:
                    log.exception("%s could not be restarted", running.ref)
                    reason = "crashed"
                    break
        finally:
            del self._running[running.ref.id]
            self._ended[running.ref.id] = reason
            if len(self._ended) > ENDED_MEMORY:
                self._ended.popitem(last=False)
            self._fail_pending(running, reason)
            if not running.ended.done():
                running.ended.set_result(reason)
            for listener in self.end_listeners:
                try:
                    listener(running.ref, reason)
                except Exception:
                    log.exception("a listener of %s's end failed", running.ref)

    async def _serve(self, running: _Running, instance: Actor) -> str:
        try:
            await instance.started()
        except Exception:
            log.exception("%s crashed in started()", running.ref)
            return "crashed"
        queue = running.queue
        taken: _Envelope | None = None  # taken from the mailbox as an eager call began
        while True:
            envelope: _Envelope
            if running.begun is not None:
                envelope, running.begun = running.begun, None
            elif running.stop_reason is not None:
                running.begun = taken  # failed with the rest of the mailbox
                break
            elif taken is not None:
                envelope, taken = taken, None
            else:
                if queue.qsize():
                    envelope = queue.get_nowait()
                else:
                    running.idle = True
                    try:
                        envelope = await queue.get()
                    finally:
                        running.idle = False
                if running.begun is not None:
                    taken = envelope
                    continue
            if envelope.kind == "stop":
                break
            if envelope.kind == "wake":
                continue
            if envelope.kind == "crashed":
                running.begun = taken  # for the restarted actor, if it is restarted
                return "crashed"
            try:
                if envelope.kind == "cast":
                    await instance.handle_cast(envelope.message)
                    continue
                if envelope.kind == "call":
                    result = await instance.handle_call(envelope.message)
                else:  # "begun": a call's handler that _eager_call started
                    result = await envelope.message
                if envelope.reply is not None and not envelope.reply.done():
                    envelope.reply.set_result(result)
            except Exception as exc:
                log.warning("%s crashed: %s: %s", running.ref, type(exc).__name__, exc)
                if envelope.reply is not None and not envelope.reply.done():
                    envelope.reply.set_exception(exc)
                running.begun = taken
                return "crashed"
        return running.stop_reason or "normal"

    def _restart(self, running: _Running, reason: str) -> bool:
        policy = running.policy
        if policy.restart == "temporary":
            return False
        if running.stop_reason is not None and not running.stopped_itself:
            return False  # stopped from outside: never restarted
        if reason != "crashed" and policy.restart == "transient":
            return False
        now = time.monotonic()
        running.restarts.append(now)
        while running.restarts and now - running.restarts[0] > policy.window:
            running.restarts.popleft()
        if len(running.restarts) > policy.max_restarts:
            log.error(
                "%s crashed %d times in %.0fs; not restarted",
                running.ref,
                len(running.restarts),
                policy.window,
            )
            return False
        log.info("%s restarted (%s)", running.ref, reason)
        return True

    def _fail_pending(self, running: _Running, reason: str) -> None:
        if running.begun is not None:
            _fail(running, running.begun, reason)
            running.begun = None
        while not running.queue.empty():
            _fail(running, running.queue.get_nowait(), reason)


def _expire(reply: asyncio.Future[Any]) -> None:
    reply.set_exception(TimeoutError("no reply from the actor in time"))


def _pending(reply: asyncio.Future[Any]) -> bool:
    return not reply.done()


def _fail(running: _Running, envelope: _Envelope, reason: str) -> None:
    """A message its actor will not handle: its caller gets ActorCrashed."""
    if isinstance(envelope.message, _Begun):
        envelope.message.close()
    if envelope.reply is not None and not envelope.reply.done():
        envelope.reply.set_exception(ActorCrashed(f"{running.ref} ended ({reason})"))


class _Begun:
    """A handler coroutine begun outside its actor's task (an eager call), awaited by that
    task from where it stopped: it waits on what the handler was waiting on, then drives
    the handler on (a cancellation is passed in)."""

    def __init__(self, handler: Coroutine[Any, Any, Any], waiting_on: Any) -> None:
        self._handler, self._waiting_on = handler, waiting_on

    def close(self) -> None:
        """Abandon the handler (its actor ended before it could go on)."""
        self._handler.close()

    def __await__(self) -> Generator[Any, Any, Any]:
        handler, waiting_on = self._handler, self._waiting_on
        while True:
            try:
                sent = yield waiting_on
            except GeneratorExit:
                handler.close()
                raise
            except BaseException as exc:
                try:
                    waiting_on = handler.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    waiting_on = handler.send(sent)
                except StopIteration as done:
                    return done.value
