"""Loading plugins: the built-in ones first, then the ``pycluster`` entry-point group."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pluggy

from pycluster import hookspecs

if TYPE_CHECKING:
    from pycluster.registry import RegistryBackend
    from pycluster.strategy import Strategy

PROJECT = "pycluster"
ENTRY_POINT_GROUP = "pycluster"

hookimpl = pluggy.HookimplMarker(PROJECT)
"""Marks a plugin's hook implementations: ``@pycluster.hookimpl``."""

# Built-in behaviour is registered like any third-party plugin, through the same hooks.
BUILTIN_PLUGINS: tuple[str, ...] = ("pycluster.strategies", "pycluster.registry")

log = logging.getLogger("pycluster.plugins")


class PluginError(Exception):
    """Plugins that cannot be used together (e.g. two provide the same strategy name)."""


class Plugins:
    """The plugin manager of a node, and what its plugins provide."""

    def __init__(self, manager: pluggy.PluginManager) -> None:
        self.manager = manager
        self._strategies: dict[str, type[Strategy]] | None = None
        self._backends: dict[str, type[RegistryBackend]] | None = None

    @classmethod
    def load(cls, *, entry_points: bool = True, extra: Sequence[object] = ()) -> Plugins:
        """Built-in plugins, then entry-point plugins (unless disabled), then ``extra``."""
        manager = pluggy.PluginManager(PROJECT)
        manager.add_hookspecs(hookspecs)
        for module_name in BUILTIN_PLUGINS:
            manager.register(importlib.import_module(module_name), module_name)
        if entry_points:
            manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        for plugin in extra:
            manager.register(plugin)
        return cls(manager)

    def strategies(self) -> dict[str, type[Strategy]]:
        """Strategy classes by name; PluginError if two plugins provide one name."""
        if self._strategies is None:
            self._strategies = self._collect("strategy", "pycluster_register_strategies")
        return self._strategies

    def registry_backends(self) -> dict[str, type[RegistryBackend]]:
        """Registry backend classes by name; PluginError if two plugins provide one name."""
        if self._backends is None:
            self._backends = self._collect(
                "registry backend", "pycluster_register_registry_backends"
            )
        return self._backends

    def _collect(self, what: str, hook_name: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        owners: dict[str, str] = {}
        for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
            owner = impl.plugin_name
            for item in impl.function() or ():
                name = item.name
                if name in found and found[name] is not item:
                    raise PluginError(
                        f"{what} {name!r} is provided by two plugins: "
                        f"{owners[name]} and {owner}; uninstall one of them"
                    )
                found[name] = item
                owners[name] = owner
        return found

    def notify(self, hook_name: str, event: object) -> None:
        """Tell every observer of ``hook_name`` about ``event``; an observer that raises is
        logged and the others still run."""
        for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
            # Each observer is called on its own so that one raising cannot silence the rest.
            kwargs = {"event": event} if "event" in impl.argnames else {}
            try:
                impl.function(**kwargs)
            except Exception:
                log.exception("plugin %s raised in %s", impl.plugin_name, hook_name)
