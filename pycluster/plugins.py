"""Loading plugins (the built-in ones first, then the ``pycluster`` entry-point group), and
loading a config validated by them."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import pluggy

from pycluster import hookspecs
from pycluster.config import Config, load
from pycluster.hooks import PROJECT

if TYPE_CHECKING:
    from pycluster.registry import RegistryBackend
    from pycluster.strategy import Strategy

ENTRY_POINT_GROUP = "pycluster"

# Built-in behaviour is registered like any third-party plugin, through the same hooks.
BUILTIN_PLUGINS: tuple[str, ...] = ("pycluster.strategies", "pycluster.registry")

log = logging.getLogger("pycluster.plugins")


class PluginError(Exception):
    """Plugins that cannot be used together (e.g. two provide the same strategy name)."""


class Plugins:
    """The plugin manager of a node, and what its plugins provide."""

    def __init__(self, manager: pluggy.PluginManager) -> None:
        self.manager = manager
        # Hook name -> (its implementations then, the callers built from them).
        self._callers: dict[str, tuple[list[pluggy.HookImpl], list[_Call]]] = {}

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
        """Strategy classes by name; PluginError if two plugins provide one name.

        Asks the plugins registered now, so a plugin registered later is included.
        """
        return self._collect("strategy", "pycluster_register_strategies")

    def registry_backends(self) -> dict[str, type[RegistryBackend]]:
        """Registry backend classes by name; PluginError if two plugins provide one name.

        Asks the plugins registered now, so a plugin registered later is included.
        """
        return self._collect("registry backend", "pycluster_register_registry_backends")

    def _collect(self, what: str, hook_name: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        owners: dict[str, str] = {}
        for call in self._calls(hook_name):
            for result in call.hook():
                for item in result:
                    name = item.name
                    if name in found and found[name] is not item:
                        raise PluginError(
                            f"{what} {name!r} is provided by two plugins: "
                            f"{owners[name]} and {call.owner}; uninstall one of them"
                        )
                    found[name] = item
                    owners[name] = call.owner
        return found

    def notify(self, hook_name: str, event: object, **extra: object) -> None:
        """Tell every observer of ``hook_name`` about ``event`` (and ``extra`` arguments);
        an observer that raises is logged and the others still run."""
        for call in self._calls(hook_name):
            try:
                call.hook(event=event, **extra)
            except Exception:
                log.exception("plugin %s raised in %s", call.owner, hook_name)

    def observed(self, hook_name: str) -> bool:
        """Whether any plugin implements or wraps ``hook_name`` now: if none does,
        :meth:`notify_each` would not call it, so a busy caller may skip the event."""
        hook: pluggy.HookCaller = getattr(self.manager.hook, hook_name)
        return bool(hook.get_hookimpls())

    def notify_each(self, events: Sequence[tuple[str, object, dict[str, object]]]) -> None:
        """:meth:`notify` for each ``(hook_name, event, extra)`` in order, looking each
        hook's observers up once for the whole batch. A hook nobody implements or wraps is
        not called at all (these batches are busy: one event per registry change)."""
        calls: dict[str, list[_Call]] = {}
        for hook_name, event, extra in events:
            observers = calls.get(hook_name)
            if observers is None:
                hook: pluggy.HookCaller = getattr(self.manager.hook, hook_name)
                implemented = bool(hook.get_hookimpls())
                observers = calls[hook_name] = self._calls(hook_name) if implemented else []
            for call in observers:
                try:
                    call.hook(event=event, **extra)
                except Exception:
                    log.exception("plugin %s raised in %s", call.owner, hook_name)

    def _calls(self, hook_name: str) -> list[_Call]:
        """One call through pluggy's hook caller per plugin implementing ``hook_name``.

        Every call goes through pluggy, so wrappers and hook-call monitors see it. But a
        pluggy hook call stops at the first implementation that raises, and an observer
        that raises must not keep the others from hearing of the event. So each plugin gets
        its own call, through a subset hook caller that leaves out the other plugins'
        implementations and keeps every wrapper: a wrapper or monitor sees one call per
        plugin, with that plugin's result or exception. The per-plugin results also tell
        which plugin provided which strategy. With no plugin to call, the hook is still
        called once, for its wrappers and monitors. A subset hook caller leaves plugins
        out, not implementations, so a plugin that both wraps and implements the hook wraps
        only its own call. The callers are rebuilt whenever the hook's implementations
        change (a plugin registered or unregistered), and reused otherwise.
        """
        hook: pluggy.HookCaller = getattr(self.manager.hook, hook_name)
        impls = hook.get_hookimpls()
        cached = self._callers.get(hook_name)
        if cached is not None and cached[0] == impls:
            return cached[1]
        # Implementations in pluggy's calling order (tryfirst first, then the most recently
        # registered first), grouped by plugin.
        plugins: dict[str, pluggy.HookImpl] = {}
        for impl in reversed(impls):
            if not (impl.wrapper or impl.hookwrapper):
                plugins.setdefault(impl.plugin_name, impl)
        calls = [
            _Call(
                impl.plugin_name,
                self.manager.subset_hook_caller(
                    hook_name,
                    [other.plugin for other in plugins.values() if other is not impl],
                ),
            )
            for impl in plugins.values()
        ]
        if not calls:
            calls = [_Call(", ".join(impl.plugin_name for impl in impls), hook)]
        self._callers[hook_name] = (impls, calls)
        return calls


class _Call(NamedTuple):
    """A hook caller that calls one plugin's implementations (and every wrapper)."""

    owner: str
    hook: pluggy.HookCaller


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
    plugins: Plugins | None = None,
) -> Config:
    """Load and validate a whole config, from a YAML file path or an already parsed dict.

    ``env`` (default: the process environment) feeds ``${VAR}`` interpolation; ``overrides``
    maps dotted keys (``node.name``) to values that replace the file's, as command-line flags
    do. Strategy and backend configs are validated by the classes the plugins register
    (``plugins``, default: the installed ones). Raises :class:`~pycluster.ConfigError`
    listing every problem found.
    """
    return load.load_config(
        source,
        env=env,
        overrides=overrides,
        plugins=plugins if plugins is not None else Plugins.load(),
    )
