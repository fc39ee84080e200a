"""The registry backend contract, a strict point of cut-off.

A backend is chosen by ``registry.backend`` in YAML and provided by a plugin through
``pycluster_register_registry_backends``. What crosses this line: its name and its options
class (validated from ``registry.options`` like any config class). The name, group and
sync operations are added with the registry itself; until then no backend is shipped and a
node runs without a registry.
"""

from __future__ import annotations

from typing import Any, ClassVar


class RegistryBackend:
    """Base class of registry backends."""

    name: ClassVar[str]
    """The ``registry.backend`` value that selects this backend."""

    Options: ClassVar[type[Any]]
    """attrs config class validating ``registry.options``."""
