"""A node's log as text lines or as JSON lines, one object per record.

A JSON line holds ``timestamp`` (RFC 3339, UTC, to the microsecond), ``level``,
``logger``, ``message``, ``node`` (this process's node, when known), ``topology`` (when the
record comes from a topology's strategy, or from code a strategy called), ``exception``
(the traceback, when there is one) and the record's event fields, given at the log call
as ``extra={"event": "...", ...}``. An operator's tools select records by those fields;
the message is for people and may be reworded.

Formatting never raises: a field that cannot be shown is replaced by a placeholder, every
text is escaped by :func:`json.dumps`, and long texts are cut at :data:`MAX_TEXT`
characters, so one odd record can neither break nor flood the log.
"""

from __future__ import annotations

import contextvars
import datetime
import itertools
import json
import logging
import math
import sys
from collections.abc import Mapping
from types import TracebackType
from typing import IO, Literal

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
"""The format of text lines (``pycluster run``'s default)."""
MAX_TEXT = 16384
"""Characters a JSON field's text is cut to."""
_MAX_ITEMS = 64
_MAX_DEPTH = 3

current_topology: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pycluster_topology", default=None
)
"""The topology whose task is running (set by the Supervisor around each topology's task,
so records logged from a strategy, or from code it calls, name their topology)."""

# What every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_FIXED = ("timestamp", "level", "logger", "message")
_MARK = "_pycluster_handler"
"""Set on the handler configure_logging installs, so that a second call replaces it."""


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object on one line (see the module doc).

    ``node`` names this process's node in every line; a record's own ``node`` field (a
    process running several nodes) wins over it.
    """

    def __init__(self, node: str | None = None) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (without the newline)."""
        fields: dict[str, object] = {
            "timestamp": _timestamp(record),
            "level": _show(record.levelname),
            "logger": _show(record.name),
            "message": _message(record),
        }
        if self.node is not None:
            fields["node"] = self.node
        topology = current_topology.get()
        if topology is not None:
            fields["topology"] = topology
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in _FIXED and not key.startswith("_"):
                fields[_show(key)] = _plain(value, _MAX_DEPTH)
        if record.exc_info:
            fields["exception"] = self._exception(record.exc_info)
        elif record.exc_text:
            fields["exception"] = _show(record.exc_text)
        if record.stack_info:
            fields["stack"] = _show(record.stack_info)
        return json.dumps(fields, ensure_ascii=False, allow_nan=False)

    def _exception(self, exc_info: ExcInfo) -> str:
        try:
            return _cut(self.formatException(exc_info))
        except Exception:
            return "<unprintable>"


def configure_logging(
    format: LogFormat = "text",
    *,
    node: str | None = None,
    level: int = logging.INFO,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Log every record of ``level`` and above to ``stream`` (stderr) as text lines or,
    with ``format="json"``, as JSON lines naming ``node``; returns the handler.

    Meant for a process that embeds a node (``pycluster run`` calls it too). Calling it
    again replaces the handler it installed before, and leaves other handlers alone.
    """
    if format not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {format!r}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    formatter = JsonFormatter(node) if format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    setattr(handler, _MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def _timestamp(record: logging.LogRecord) -> str:
    try:
        at = datetime.datetime.fromtimestamp(float(record.created), datetime.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        at = datetime.datetime.now(datetime.UTC)
    return at.isoformat(timespec="microseconds")


def _message(record: logging.LogRecord) -> str:
    try:
        return _cut(record.getMessage())
    except Exception:
        # A bad format string or arguments: show both rather than lose the record.
        return _cut(f"{_show(record.msg)} (arguments {_show(record.args)})")


def _plain(value: object, depth: int) -> object:
    """``value`` as JSON data: scalars as they are, containers (bounded) item by item,
    anything else as its text."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth > 0 and isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(item, depth - 1) for item in itertools.islice(value, _MAX_ITEMS)]
    if depth > 0 and isinstance(value, Mapping):
        items = itertools.islice(value.items(), _MAX_ITEMS)
        return {_show(key): _plain(item, depth - 1) for key, item in items}
    return _show(value)


def _show(value: object) -> str:
    """``str(value)``, cut to MAX_TEXT; a placeholder if it raises."""
    try:
        return _cut(value if isinstance(value, str) else str(value))
    except Exception:
        return "<unprintable>"


def _cut(text: str) -> str:
    if len(text) > MAX_TEXT:
        return text[:MAX_TEXT] + f"... ({len(text) - MAX_TEXT} more characters)"
    return text
