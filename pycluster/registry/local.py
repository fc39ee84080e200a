"""The ``local`` registry backend: names known to this node only (a cluster of one)."""

from __future__ import annotations

import attrs

from pycluster.actors.ref import ActorRef
from pycluster.registry.backend import RegistryBackend


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
        self._names: dict[str, ActorRef] = {}
        self._groups: dict[str, set[ActorRef]] = {}

    async def claim(self, name: str, ref: ActorRef, timeout: float) -> ActorRef | None:
        holder = self._names.setdefault(name, ref)
        if holder != ref:
            return holder
        self.on_changed([name])
        return None

    async def release(self, name: str, ref: ActorRef) -> None:
        if self._names.get(name) == ref:
            del self._names[name]
            self.on_changed([name])

    def whereis(self, name: str) -> ActorRef | None:
        return self._names.get(name)

    def registered(self) -> dict[str, ActorRef]:
        return dict(self._names)

    async def join(self, group: str, ref: ActorRef) -> None:
        self._groups.setdefault(group, set()).add(ref)

    async def leave(self, group: str, ref: ActorRef) -> None:
        self._groups.get(group, set()).discard(ref)

    def members(self, group: str) -> list[ActorRef]:
        return sorted(self._groups.get(group, ()))
