"""The cluster-wide registry: the contract every registry backend implements."""

from pycluster.registry.backend import RegistryBackend

__all__ = ["RegistryBackend"]
