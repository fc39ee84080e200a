"""Small, composable value checks for :func:`pycluster.config.setting`.

Each returns None for a good value, else what was expected; the converter adds what it got.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence, Sized

from pycluster.config.convert import Check, Unit
from pycluster.nodename import NodeNameError, parse_node_name


def port(value: int) -> str | None:
    """A TCP/UDP port number."""
    return None if 1 <= value <= 65535 else "expected a port number from 1 to 65535"


def positive(value: float) -> str | None:
    """A number above zero."""
    return None if value > 0 else "expected a positive number"


def positive_duration(value: float) -> str | None:
    """A duration above zero (for a key declared with ``setting(unit=...)``)."""
    return None if value > 0 else "expected a positive duration"


def duration_at_least(low: float, unit: Unit) -> Check:
    """A duration of at least ``low``, in ``unit`` (the key's own)."""
    words = "ms" if unit == "ms" else "seconds"

    def check(value: float) -> str | None:
        return None if value >= low else f"expected a duration of at least {low:g} {words}"

    return check


def between(low: float, high: float) -> Check:
    """A number in ``[low, high]``."""

    def check(value: float) -> str | None:
        return None if low <= value <= high else f"expected a number from {low} to {high}"

    return check


def ip_address(value: str) -> str | None:
    """An IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "expected an IP address"
    return None


def non_empty(value: Sized) -> str | None:
    """A list or string with something in it."""
    if len(value) > 0:
        return None
    return (
        "expected a non-empty string" if isinstance(value, str) else "expected at least one entry"
    )


def node_name(value: str) -> str | None:
    """``name@host`` or ``name@host:port`` (IPv6 hosts in brackets)."""
    try:
        parse_node_name(value)
    except NodeNameError as exc:
        return f"expected name@host or name@host:port ({exc})"
    return None


MIN_COOKIE_LENGTH = 16
"""Characters a cookie has at least, surrounding whitespace not counted."""


def cookies(value: str | Sequence[str]) -> tuple[str, ...]:
    """The cookies of ``value`` (one, or a list for rotation: the first is used to dial,
    any is accepted), without surrounding whitespace, which no source keeps (a file's
    final newline, a YAML block's indent). ValueError says what is wrong, never the
    cookie."""
    items = (value,) if isinstance(value, str) else tuple(value)
    if not items:
        raise ValueError("the list is empty")
    found = tuple(item.strip() for item in items)
    for index, item in enumerate(found):
        if len(item) < MIN_COOKIE_LENGTH:
            which = "the cookie" if isinstance(value, str) else f"cookie {index + 1}"
            raise ValueError(
                f"{which} has {len(item)} characters, fewer than {MIN_COOKIE_LENGTH}; "
                "make one with `openssl rand -base64 32`"
            )
    return found


def cookie(value: str | Sequence[str]) -> str | None:
    """A cookie, or a list of them: each of at least ``MIN_COOKIE_LENGTH`` characters."""
    try:
        cookies(value)
    except ValueError:
        return (
            f"expected a cookie of at least {MIN_COOKIE_LENGTH} characters (surrounding "
            "whitespace not counted), or a non-empty list of them"
        )
    return None
