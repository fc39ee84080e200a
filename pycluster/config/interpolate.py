"""``${VAR}`` and ``${VAR:-default}`` in config string values.

Interpolation runs on the parsed YAML, value by value, so an environment variable can never
inject YAML structure. ``$$`` writes a literal ``$``. A value produced by interpolation is
an :class:`Interpolated` string, which numeric and boolean settings may parse strictly
(``port: ${PORT:-9100}`` works) while a plain YAML string in such a place stays an error.
A default is plain text: ``${A:-${B}}`` is refused rather than guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pycluster.config.errors import ConfigIssue, join_path

MAX_DEPTH = 100
"""Mappings and lists may be nested at most this many levels deep (the top mapping is one)."""

_TOKEN = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\})")


class Interpolated(str):
    """A string that came out of ``${...}`` interpolation (so it may be parsed as a number)."""

    __slots__ = ()


def interpolate(data: object, env: Mapping[str, str], issues: list[ConfigIssue]) -> object:
    """Return ``data`` with every string value interpolated from ``env``; problems go to issues."""
    # Each distinct text is expanded once: a YAML alias used thousands of times is one
    # string object, and expanding it again at each use is how a small file becomes slow.
    expanded: dict[str, tuple[str, list[str]]] = {}

    def walk(data: object, path: str, depth: int) -> object:
        if isinstance(data, dict | list) and depth > MAX_DEPTH:
            issues.append(ConfigIssue(path, f"more than {MAX_DEPTH} levels of nesting"))
            return data
        if isinstance(data, dict):
            return {
                key: walk(value, join_path(path, key), depth + 1) for key, value in data.items()
            }
        if isinstance(data, list):
            return [walk(value, join_path(path, i), depth + 1) for i, value in enumerate(data)]
        if isinstance(data, str) and "$" in data:
            if data not in expanded:
                expanded[data] = _expand(data, env)
            text, problems = expanded[data]
            issues.extend(ConfigIssue(path, problem) for problem in problems)
            return text
        return data

    try:
        return walk(data, "", 1)
    except RecursionError:  # MAX_DEPTH should make this unreachable
        issues.append(ConfigIssue("", "nested too deeply"))
        return data


def _expand(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """``text`` interpolated from ``env``, and what is wrong with it."""
    missing: list[str] = []
    substituted = nested = False

    def replace(match: re.Match[str]) -> str:
        nonlocal substituted, nested
        name = match.group("name")
        if name is None:
            return "$"
        substituted = True
        value = env.get(name)
        default = match.group("default")
        nested = nested or (default is not None and "${" in default)
        # Shell semantics: ${VAR:-d} also replaces an empty VAR; ${VAR} keeps it empty.
        if value is not None and (value or default is None):
            return value
        if default is not None:
            return default
        missing.append(name)
        return ""

    out = _TOKEN.sub(replace, text)
    problems = []
    if "${" in _TOKEN.sub("", text):
        problems.append("malformed ${...}: write ${VAR} or ${VAR:-default} ($$ for '$')")
    if nested:
        problems.append("nested ${...} in a default is not supported")
    problems.extend(
        f"environment variable {name} is not set (give a default with ${{{name}:-value}})"
        for name in missing
    )
    return (Interpolated(out) if substituted else out), problems
