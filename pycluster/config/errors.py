"""Config problems: each names the dotted path of the key it is about."""

from __future__ import annotations

from collections.abc import Iterable

import attrs


@attrs.frozen
class ConfigIssue:
    """One problem found in a config: where (dotted path) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """A config that cannot be used; ``issues`` lists every problem found, not just the first."""

    def __init__(self, issues: Iterable[ConfigIssue], source: str | None = None) -> None:
        self.issues = tuple(issues)
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        count = len(self.issues)
        head = f"{where}{count} problem{'s' if count != 1 else ''} in the config"
        return "\n".join([head, *(f"  {issue}" for issue in self.issues)])


def join_path(path: str, key: object) -> str:
    """The dotted path of ``key`` under ``path``; list indices are written ``[i]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)
