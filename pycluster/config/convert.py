"""Plain data (parsed YAML) -> frozen attrs config classes, with every problem collected.

A config class is an ``attrs.frozen`` class whose fields are declared with :func:`setting`.
:func:`structure` walks the data against the field types, never coerces silently (a string
where a list is expected is an error, not a one-item list), rejects unknown keys with a
"did you mean", and reports each problem with its dotted path. Strategies and registry
backends describe their own ``config``/``options`` the same way.
"""

from __future__ import annotations

import decimal
import difflib
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

from pycluster.config.errors import ConfigIssue, join_path
from pycluster.config.interpolate import Interpolated

Check = Callable[[Any], str | None]
"""A check returns None when a value is fine, else what was expected ("expected ...")."""

INVALID: Any = attrs.make_class("Invalid", [], repr=False)()
"""Returned by :func:`structure` when a value had problems (already reported)."""

_INT = re.compile(r"[+-]?[0-9]+")

Unit = Literal["ms", "s"]
"""The unit of a plain number given for a duration key."""
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)(ms|s|m)")
_MS_PER = {"ms": 1, "s": 1000, "m": 60_000}
_UNIT_WORDS = {"ms": "ms", "s": "seconds"}


def setting(
    *,
    doc: str,
    default: Any = attrs.NOTHING,
    factory: Callable[[], Any] | None = None,
    expect: str | None = None,
    check: Check | None = None,
    each: Check | None = None,
    secret: bool = False,
    unit: Unit | None = None,
) -> Any:
    """Declare a config key.

    ``doc`` is shown in the configuration reference; ``expect`` replaces the type's own
    description in errors ("expected a positive number of ms"); ``check`` validates the
    value once its type is right; ``each`` checks every item of a list; ``secret`` keeps
    the value out of errors and reprs.

    ``unit`` (``"ms"`` or ``"s"``) makes a number key a duration: it takes a plain number
    in ``unit``, or a string with a unit of its own (``"500ms"``, ``"1.5s"``, ``"1m"``),
    and holds the number of ``unit`` either way. A value that is no duration is reported
    as "expected a duration (a number of ms, or e.g. ...)"; ``expect`` then describes what
    ``check`` wants.
    """
    metadata = {
        "doc": doc,
        "expect": expect,
        "check": check,
        "each": each,
        "secret": secret,
        "unit": unit,
    }
    if factory is not None:
        return attrs.field(factory=factory, metadata=metadata, repr=not secret)
    return attrs.field(default=default, metadata=metadata, repr=not secret)


def structure(cls: type[Any], data: object, path: str, issues: list[ConfigIssue]) -> Any:
    """Build ``cls`` (an attrs config class) from ``data``; problems are appended to issues."""
    return _structure(cls, data, path, issues, None)


_HINTS: dict[type[Any], dict[str, Any]] = {}


def field_types(cls: type[Any]) -> dict[str, Any]:
    """The resolved type of each field of an attrs class (cached)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def describe_type(tp: Any) -> str:
    """How a type reads in errors and in the configuration reference."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is Any or tp is object:
        return "any value"
    if attrs.has(tp):
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {_plural(args[0])}"
    if origin in (dict, Mapping):
        return f"a mapping of names to {_plural(args[1])}"
    if _is_optional(tp):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(describe_type(a) for a in inner) + " (or null)"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    return str(tp)


def _plural(tp: Any) -> str:
    text = describe_type(tp)
    for article in ("a ", "an "):
        if text.startswith(article):
            noun = text[len(article) :]
            return "mappings" if noun == "mapping" else f"{noun}s"
    return text


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in (
        typing.get_args(tp)
    )


def shown(value: object, secret: bool = False) -> str:
    """A value as quoted in an error message (secrets are never echoed)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if secret:
        return "a value (hidden)"
    text = repr(str(value)) if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _structure(
    tp: Any, data: object, path: str, issues: list[ConfigIssue], meta: Mapping[str, Any] | None
) -> Any:
    meta = meta or {}
    secret = bool(meta.get("secret"))

    def wrong() -> Any:
        expect = meta.get("expect") or describe_type(tp)
        issues.append(ConfigIssue(path, f"expected {expect}, got {shown(data, secret)}"))
        return INVALID

    if _is_optional(tp):
        # `${VAR:-}` with VAR unset reads as "not set" where a key may be null.
        if data is None or (isinstance(data, Interpolated) and not data.strip()):
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = inner[0] if len(inner) == 1 else typing.Union[tuple(inner)]  # noqa: UP007
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        # The data's shape picks the member: a list goes to the list type (so its items'
        # problems keep their paths), anything else to the first scalar type that fits.
        options = typing.get_args(tp)
        sequences = [o for o in options if typing.get_origin(o) in (list, tuple)]
        if isinstance(data, list) and sequences:
            return _structure(sequences[0], data, path, issues, meta)
        for option in options:
            if option in sequences:
                continue
            scratch: list[ConfigIssue] = []
            value = _structure(option, data, path, scratch, None)
            if not scratch:
                return value
        return wrong()

    unit: Unit | None = meta.get("unit")
    if unit is not None and tp in (int, float):
        value = _duration(tp, data, unit)
        if value is INVALID:
            expected = f"expected {describe_duration(tp, unit)}"
            issues.append(ConfigIssue(path, f"{expected}, got {shown(data, secret)}"))
        return value
    if attrs.has(tp):
        if not isinstance(data, dict):
            return wrong()
        return _structure_class(tp, data, path, issues)
    if tp is Any or tp is object:
        return data
    if origin is Literal:
        return data if data in typing.get_args(tp) and not isinstance(data, bool) else wrong()
    if origin in (list, tuple):
        if not isinstance(data, list):
            return wrong()
        each: Check | None = meta.get("each")
        items = []
        for i, raw_item in enumerate(data):
            item_path = join_path(path, i)
            item_meta = {"secret": secret}
            item = _structure(typing.get_args(tp)[0], raw_item, item_path, issues, item_meta)
            problem = each(item) if each is not None and item is not INVALID else None
            if problem is not None:
                issues.append(ConfigIssue(item_path, f"{problem}, got {shown(raw_item, secret)}"))
                item = INVALID
            items.append(item)
        return INVALID if any(item is INVALID for item in items) else tuple(items)
    if origin in (dict, Mapping):
        if not isinstance(data, dict):
            return wrong()
        value_type = typing.get_args(tp)[1]
        out: dict[str, Any] = {}
        ok = True
        for key, value in data.items():
            if not isinstance(key, str):
                issues.append(ConfigIssue(join_path(path, key), "keys must be strings"))
                ok = False
                continue
            out[key] = _structure(value_type, value, join_path(path, key), issues, None)
            ok = ok and out[key] is not INVALID
        return out if ok else INVALID
    scalar = _scalar(tp, data)
    return wrong() if scalar is INVALID else scalar


def _scalar(tp: Any, data: object) -> Any:
    """A scalar of type ``tp`` from ``data``; strings from interpolation may be parsed."""
    if tp is str:
        return str(data) if isinstance(data, str) else INVALID
    if isinstance(data, Interpolated):
        text = data.strip()
        if tp is bool and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if tp is int and _INT.fullmatch(text):
            return int(text)
        if tp is float:
            try:
                number = float(text)
            except ValueError:
                return INVALID
            return number if math.isfinite(number) else INVALID
        return INVALID
    if isinstance(data, bool):
        return data if tp is bool else INVALID
    if tp is int:
        return data if isinstance(data, int) else INVALID
    if tp is float:
        if isinstance(data, int | float) and math.isfinite(data):
            return float(data)
        return INVALID
    return INVALID


def describe_duration(tp: Any, unit: Unit) -> str:
    """How a duration key reads in errors and in the configuration reference."""
    if tp is int:
        return f"a duration (a whole number of {_UNIT_WORDS[unit]}, or e.g. '30s', '1m')"
    return f"a duration (a number of {_UNIT_WORDS[unit]}, or e.g. '500ms', '5s', '1m')"


def _duration(tp: Any, data: object, unit: Unit) -> Any:
    """A duration as a number of ``unit``: a plain number is one already, a string says
    its unit (``500ms``, ``1.5s``, ``1m``). An ``int`` key takes whole numbers only."""
    text = data.strip() if isinstance(data, str) else None
    match = _DURATION.fullmatch(text) if text is not None else None
    if match is None:
        # A plain number (or one from interpolation): the key's own unit.
        return _scalar(tp, data)
    number, given = match.groups()
    amount = decimal.Decimal(number) * _MS_PER[given] / _MS_PER[unit]
    if tp is int:
        return int(amount) if amount == amount.to_integral_value() else INVALID
    value = float(amount)
    return value if math.isfinite(value) else INVALID


def _structure_class(
    cls: type[Any], data: dict[Any, Any], path: str, issues: list[ConfigIssue]
) -> Any:
    fields = {f.name: f for f in attrs.fields(cls)}
    hints = field_types(cls)
    before = len(issues)
    for key in data:
        if isinstance(key, str) and key in fields:
            continue
        message = f"unknown key {shown(key)}"
        if isinstance(key, str):
            close = difflib.get_close_matches(key, list(fields), n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
        message += "; known keys: " + ", ".join(fields)
        issues.append(ConfigIssue(join_path(path, key), message))
    values: dict[str, Any] = {}
    for name, field in fields.items():
        key_path = join_path(path, name)
        if name not in data:
            if field.default is attrs.NOTHING:
                issues.append(ConfigIssue(key_path, "required key is missing"))
            continue
        values[name] = _checked(field, data[name], hints[name], key_path, issues)
    if len(issues) > before:
        return INVALID
    instance = cls(**values)
    # Checks across keys: a config class may define config_problems(), returning
    # (key, message) pairs; it runs once every field is valid (docs/plugins.md).
    problems = getattr(instance, "config_problems", None)
    if problems is not None:
        for key, message in problems():
            issues.append(ConfigIssue(join_path(path, key), message))
        if len(issues) > before:
            return INVALID
    return instance


def _checked(
    field: attrs.Attribute[Any], raw: object, tp: Any, path: str, issues: list[ConfigIssue]
) -> Any:
    """Structure one field's value (list items get ``each`` there), then run ``check``."""
    meta = field.metadata
    value = _structure(tp, raw, path, issues, meta)
    if value is INVALID or value is None:
        return value
    secret = bool(meta.get("secret"))
    check: Check | None = meta.get("check")
    problem = check(value) if check is not None else None
    if problem is not None:
        expect = meta.get("expect")
        problem = f"expected {expect}" if expect else problem
        issues.append(ConfigIssue(path, f"{problem}, got {shown(raw, secret)}"))
        return INVALID
    return value


@attrs.frozen
class FieldDoc:
    """One key of a config class, as the configuration reference shows it."""

    name: str
    type: str
    default: str
    doc: str


def describe(cls: type[Any]) -> list[FieldDoc]:
    """The keys of a config class for documentation: name, type, default and doc."""
    hints = field_types(cls)
    docs = []
    for field in attrs.fields(cls):
        if field.default is attrs.NOTHING:
            default = "required"
        elif isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            default = repr(field.default.factory())
        elif field.metadata.get("secret") and field.default is not None:
            default = "(hidden)"
        else:
            default = "null" if field.default is None else repr(field.default)
        unit = field.metadata.get("unit")
        if unit is not None:
            expect = describe_duration(hints[field.name], unit)
        else:
            expect = field.metadata.get("expect") or describe_type(hints[field.name])
        docs.append(FieldDoc(field.name, expect, default, field.metadata.get("doc", "")))
    return docs
