"""What registering a name can fail with (besides ClaimFailed, the backend's)."""

from __future__ import annotations

from pycluster.actors.ref import ActorRef


class AlreadyRegistered(Exception):
    """The name is taken; ``ref`` is the actor holding it."""

    def __init__(self, name: str, ref: ActorRef) -> None:
        super().__init__(f"{name!r} is already registered to {ref}")
        self.name = name
        self.ref = ref


class AlreadyStarted(AlreadyRegistered):
    """``spawn`` found the name taken: ``ref`` is the running actor (Elixir's
    ``{:error, {:already_started, pid}}``)."""

    def __init__(self, name: str, ref: ActorRef) -> None:
        Exception.__init__(self, f"{name!r} is already started as {ref}")
        self.name = name
        self.ref = ref


class NotRegistered(LookupError):
    """No actor is registered under that name."""
