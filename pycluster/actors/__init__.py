"""Actors: objects whose messages are handled one at a time on their node's event loop."""

import warnings
from typing import Any

from pycluster.actors.actor import Actor, ActorCrashed, ActorRestartPolicy
from pycluster.actors.runtime import Actors, NoSuchActor

__all__ = ["Actor", "ActorCrashed", "ActorRestartPolicy", "Actors", "NoSuchActor"]


def __getattr__(name: str) -> Any:
    # Deprecated names, kept for one release (see the CHANGELOG).
    if name == "RestartPolicy":
        warnings.warn(
            "pycluster.actors.RestartPolicy is now pycluster.ActorRestartPolicy",
            DeprecationWarning,
            stacklevel=2,
        )
        return ActorRestartPolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
