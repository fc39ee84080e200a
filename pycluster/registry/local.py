"""The ``local`` registry backend: names known to this node only (a cluster of one)."""

from __future__ import annotations

from typing import Any

import attrs

from pycluster.actors.ref import ActorRef
from pycluster.registry import events
from pycluster.registry.backend import Registration, RegistryBackend


@attrs.frozen
class LocalOptions:
    """``local`` takes no options."""


class LocalRegistry(RegistryBackend):
    """Names and groups of this node alone: for tests and single-process applications."""

    name = "local"
    Options = LocalOptions
    reports_changes = True

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._names: dict[str, Registration] = {}
        self._groups: dict[str, dict[ActorRef, Any]] = {}

    async def claim(
        self, name: str, ref: ActorRef, timeout: float, meta: Any = None
    ) -> ActorRef | None:
        holder = self._names.get(name)
        if holder is not None:
            return holder.ref
        self._names[name] = Registration(name, ref, meta)
        self.on_event(events.Registered(name, ref, meta))
        self.on_changed([name])
        return None

    async def release(self, name: str, ref: ActorRef, reason: str = "unregistered") -> None:
        holder = self._names.get(name)
        if holder is not None and holder.ref == ref:
            del self._names[name]
            self.on_event(events.Unregistered(name, ref, reason))
            self.on_changed([name])

    async def update_meta(self, name: str, ref: ActorRef, meta: Any) -> bool:
        holder = self._names.get(name)
        if holder is None or holder.ref != ref:
            return False
        self._names[name] = Registration(name, ref, meta)
        self.on_event(events.Registered(name, ref, meta))
        return True

    def whereis(self, name: str) -> ActorRef | None:
        holder = self._names.get(name)
        return None if holder is None else holder.ref

    def lookup(self, name: str) -> Registration | None:
        return self._names.get(name)

    def registered(self) -> dict[str, ActorRef]:
        return {name: holder.ref for name, holder in self._names.items()}

    async def join(self, group: str, ref: ActorRef, meta: Any = None) -> None:
        members = self._groups.setdefault(group, {})
        if ref in members and members[ref] == meta:
            return
        members[ref] = meta
        self.on_event(events.Joined(group, ref, meta))

    async def leave(self, group: str, ref: ActorRef, reason: str = "left") -> None:
        members = self._groups.get(group)
        if members is None or ref not in members:
            return
        del members[ref]
        if not members:
            del self._groups[group]
        self.on_event(events.Left(group, ref, reason))

    def memberships(self, group: str) -> dict[ActorRef, Any]:
        return dict(self._groups.get(group, {}))

    def groups(self) -> list[str]:
        return sorted(self._groups)
