"""``${VAR}`` and ``${VAR:-default}`` in config string values.

Interpolation runs on the parsed YAML, value by value, so an environment variable can never
inject YAML structure. ``$$`` writes a literal ``$``. A value produced by interpolation is
an :class:`Interpolated` string, which numeric and boolean settings may parse strictly
(``port: ${PORT:-9100}`` works) while a plain YAML string in such a place stays an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pycluster.config.errors import ConfigIssue, join_path

_TOKEN = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\})")


class Interpolated(str):
    """A string that came out of ``${...}`` interpolation (so it may be parsed as a number)."""

    __slots__ = ()


def interpolate(data: object, env: Mapping[str, str], issues: list[ConfigIssue]) -> object:
    """Return ``data`` with every string value interpolated from ``env``; problems go to issues."""
    return _walk(data, "", env, issues)


def _walk(data: object, path: str, env: Mapping[str, str], issues: list[ConfigIssue]) -> object:
    if isinstance(data, dict):
        return {key: _walk(value, join_path(path, key), env, issues) for key, value in data.items()}
    if isinstance(data, list):
        return [_walk(value, join_path(path, i), env, issues) for i, value in enumerate(data)]
    if isinstance(data, str) and "$" in data:
        return _expand(data, path, env, issues)
    return data


def _expand(text: str, path: str, env: Mapping[str, str], issues: list[ConfigIssue]) -> str:
    missing: list[str] = []
    substituted = False

    def replace(match: re.Match[str]) -> str:
        nonlocal substituted
        name = match.group("name")
        if name is None:
            return "$"
        substituted = True
        value = env.get(name)
        default = match.group("default")
        # Shell semantics: ${VAR:-d} also replaces an empty VAR; ${VAR} keeps it empty.
        if value is not None and (value or default is None):
            return value
        if default is not None:
            return default
        missing.append(name)
        return ""

    out = _TOKEN.sub(replace, text)
    if "${" in _TOKEN.sub("", text):
        issues.append(
            ConfigIssue(path, "malformed ${...}: write ${VAR} or ${VAR:-default} ($$ for '$')")
        )
    for name in missing:
        issues.append(
            ConfigIssue(
                path,
                f"environment variable {name} is not set (give a default with ${{{name}:-value}})",
            )
        )
    return Interpolated(out) if substituted else out
