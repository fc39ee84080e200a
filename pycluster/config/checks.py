"""Small, composable value checks for :func:`pycluster.config.setting`.

Each returns None for a good value, else what was expected; the converter adds what it got.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sized
from typing import Any

from pycluster.config.convert import Check
from pycluster.nodename import NodeNameError, parse_node_name


def port(value: int) -> str | None:
    """A TCP/UDP port number."""
    return None if 1 <= value <= 65535 else "expected a port number from 1 to 65535"


def positive(value: float) -> str | None:
    """A number above zero."""
    return None if value > 0 else "expected a positive number"


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


def all_of(*checks: Check) -> Check:
    """Every check must pass; the first problem is reported."""

    def check(value: Any) -> str | None:
        for one in checks:
            problem = one(value)
            if problem is not None:
                return problem
        return None

    return check
