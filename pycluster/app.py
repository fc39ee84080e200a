"""Your service as a node: the ``app`` entry point of ``pycluster run``.

``app: "package.module:attribute"`` (or ``pycluster run --app``) names a callable that
``pycluster run`` calls with the started :class:`~pycluster.node.Node`, once the node is
first ready (with ``node.ready.min_peers``, once that many peers have merged). It returns
either an awaitable, run once at start, or an async context manager, entered at start and
exited on SIGTERM/SIGINT before the node leaves the cluster (like a FastAPI lifespan). The
node reports ready (``/readyz``) only once the awaitable has returned or the context
manager has been entered.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from pycluster.config import ConfigError, ConfigIssue
from pycluster.node import Node

SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
"""``package.module:attribute`` (the attribute may be dotted: ``module:App.factory``)."""

App = Callable[[Node], Any]


def resolve(spec: str, app_dir: str | None = ".") -> App:
    """The callable ``spec`` names, imported with ``app_dir`` first on ``sys.path``
    (None leaves ``sys.path`` alone). A ConfigError at path ``app`` naming the module or
    the attribute when it cannot be found; the module's own import-time errors too."""
    if not SPEC.fullmatch(spec):
        raise _problem(f"expected 'package.module:attribute', got {spec!r}")
    module_name, _, attribute = spec.partition(":")
    if app_dir is not None and app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise _problem(
                f"module {module_name!r} not found (looked in {app_dir!r} and on sys.path)"
            ) from None
        raise _problem(f"importing {module_name!r} failed: {exc}") from None
    except Exception as exc:
        raise _problem(f"importing {module_name!r} raised {type(exc).__name__}: {exc}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise _problem(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise _problem(f"{spec} is a {type(target).__name__}, not something to call")
    app: App = target
    return app


class AppError(Exception):
    """The app failed at start: it raised, or returned something ``run`` cannot use."""


async def enter(spec: str, app: App, node: Node) -> AbstractAsyncContextManager[Any] | None:
    """Call ``app(node)`` and run or enter what it returns; the context manager to exit at
    shutdown, or None. AppError, chained to its cause, when it fails."""
    try:
        result = app(node)
        if isinstance(result, AbstractAsyncContextManager) or (
            hasattr(result, "__aenter__") and hasattr(result, "__aexit__")
        ):
            await result.__aenter__()
            lifespan: AbstractAsyncContextManager[Any] = result
            return lifespan
        if inspect.isawaitable(result):
            await result
            return None
    except Exception as exc:
        raise AppError(f"{spec} failed to start: {type(exc).__name__}: {exc}") from exc
    raise AppError(
        f"{spec} returned {type(result).__name__}: expected an awaitable "
        "(an 'async def' function) or an async context manager"
    )


def _problem(message: str) -> ConfigError:
    return ConfigError([ConfigIssue("app", message)])
