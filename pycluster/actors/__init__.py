"""Actors: objects whose messages are handled one at a time on their node's event loop."""

from pycluster.actors.actor import Actor, ActorCrashed, RestartPolicy
from pycluster.actors.runtime import Actors, NoSuchActor

__all__ = ["Actor", "ActorCrashed", "Actors", "NoSuchActor", "RestartPolicy"]
