"""The markers of pycluster's plugin hooks (pluggy project ``pycluster``).

Plugins mark their implementations with ``@pycluster.hookimpl``; the specifications, in
:mod:`pycluster.hookspecs`, use the private spec marker. Both live here, below every part
that provides or calls hooks, so a built-in plugin (the registry, the strategies) needs
nothing from the plugin host above it.
"""

from __future__ import annotations

import pluggy

PROJECT = "pycluster"

hookimpl = pluggy.HookimplMarker(PROJECT)
"""Marks a plugin's hook implementations: ``@pycluster.hookimpl``."""

_hookspec = pluggy.HookspecMarker(PROJECT)
