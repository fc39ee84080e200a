"""JSON log lines: fields, the topology of a strategy's task, odd records, the helper."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import attrs
import pytest

from pycluster import JsonFormatter, Plugins, Strategy, Topology, configure_logging, hookimpl
from pycluster.logs import MAX_TEXT
from tests.conftest import eventually, supervisor_for


def line(record: logging.LogRecord, node: str | None = "a@127.0.0.2") -> dict[str, Any]:
    text = JsonFormatter(node).format(record)
    assert "\n" not in text
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def make(msg: object, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("pycluster.test", logging.WARNING, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_a_record_is_one_json_object_with_its_fields() -> None:
    fields = line(make("cannot connect to %s", "b@127.0.0.3", event="connect_failed", n=3))
    assert fields["level"] == "WARNING"
    assert fields["logger"] == "pycluster.test"
    assert fields["message"] == "cannot connect to b@127.0.0.3"
    assert fields["node"] == "a@127.0.0.2"
    assert (fields["event"], fields["n"]) == ("connect_failed", 3)
    assert fields["timestamp"].endswith("+00:00")
    assert "topology" not in fields
    assert "node" not in line(make("x"), node=None)


def test_odd_records_are_shown_not_raised() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

        __repr__ = __str__

    fields = line(
        make(
            "%d items",
            "not a number",
            thing=Unprintable(),
            ratio=float("nan"),
            nested={"k": [1, {2, 3}], Unprintable(): "v"},
            text='\x00"quoted"\n{not json}',
        )
    )
    assert "not a number" in fields["message"]  # the arguments, shown beside the format
    assert fields["thing"] == "<unprintable>"
    assert fields["ratio"] == "nan"
    assert fields["nested"]["k"][0] == 1
    assert fields["nested"]["<unprintable>"] == "v"
    assert fields["text"] == '\x00"quoted"\n{not json}'
    huge = line(make("x" * (MAX_TEXT * 2)))["message"]
    assert len(huge) < MAX_TEXT + 100


def test_an_exception_is_one_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        record = make("failed")
        record.exc_info = (ValueError, exc, exc.__traceback__)
    fields = line(record)
    assert fields["exception"].startswith("Traceback")
    assert "ValueError: boom" in fields["exception"]


@attrs.frozen
class NoConfig:
    """No settings."""


class Chatty(Strategy):
    """Logs through a logger of its own, from its task and from a task it starts."""

    name = "test.chatty"
    Config = NoConfig
    logged: ClassVar[asyncio.Event]

    async def run(self, topology: Topology) -> None:
        logger = logging.getLogger("test.chatty")
        logger.info("from the strategy", extra={"event": "hello"})
        await asyncio.create_task(self._child(logger))
        Chatty.logged.set()
        await topology.sleep(60)

    @staticmethod
    async def _child(logger: logging.Logger) -> None:
        logger.info("from a task it started")


class ChattyPlugin:
    @hookimpl
    def pycluster_register_strategies(self) -> list[type[Strategy]]:
        return [Chatty]


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(JsonFormatter("a@127.0.0.2"))
    logger = logging.getLogger("test.chatty")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield output
    finally:
        logger.removeHandler(handler)


async def test_records_from_a_strategy_name_its_topology(
    stream: io.StringIO, plugins: Plugins
) -> None:
    from pycluster import InMemoryNetwork

    plugins.manager.register(ChattyPlugin())
    Chatty.logged = asyncio.Event()
    network = InMemoryNetwork(plugins)
    supervisor = supervisor_for("a@127.0.0.2", {"strategy": "test.chatty"}, network, plugins)
    async with supervisor:
        await eventually(Chatty.logged.is_set)
    logging.getLogger("test.chatty").info("outside any topology")
    records = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert [(r["message"], r.get("topology")) for r in records] == [
        ("from the strategy", "t"),
        ("from a task it started", "t"),
        ("outside any topology", None),
    ]
    assert records[0]["event"] == "hello"


def test_configure_logging_replaces_only_its_own_handler() -> None:
    root = logging.getLogger()
    other = logging.NullHandler()
    root.addHandler(other)
    level = root.level
    first = configure_logging("json", node="a@127.0.0.2", stream=io.StringIO())
    output = io.StringIO()
    try:
        second = configure_logging("json", node="b@127.0.0.3", stream=output)
        assert first not in root.handlers
        assert second in root.handlers
        assert other in root.handlers
        logging.getLogger("pycluster.test").warning("hi", extra={"event": "greeting"})
        (fields,) = [json.loads(text) for text in output.getvalue().splitlines()]
        assert (fields["node"], fields["event"]) == ("b@127.0.0.3", "greeting")
        with pytest.raises(ValueError, match="format: expected one of text, json"):
            configure_logging("xml")  # type: ignore[arg-type]
    finally:
        root.removeHandler(second)
        root.removeHandler(other)
        root.setLevel(level)
