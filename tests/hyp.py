"""Hypothesis strategies shared by the tests (one place, as the style guide asks)."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

base_names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,15}", fullmatch=True)
ipv4_hosts = st.ip_addresses(v=4).map(str)
ipv6_hosts = st.ip_addresses(v=6).map(lambda a: str(ipaddress.IPv6Address(a)))
dns_hosts = st.lists(
    st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,10}[a-z0-9])?", fullmatch=True), min_size=1, max_size=4
).map(".".join)
ports = st.integers(min_value=1, max_value=65535)


@st.composite
def node_names(draw: st.DrawFn) -> str:
    """A valid node name in any of its written forms."""
    name = draw(base_names)
    port = draw(st.none() | ports)
    host = f"[{draw(ipv6_hosts)}]" if draw(st.booleans()) else draw(ipv4_hosts | dns_hosts)
    return f"{name}@{host}" if port is None else f"{name}@{host}:{port}"


small_node_sets = st.frozensets(st.sampled_from([f"n{i}@127.0.0.{i + 2}" for i in range(8)]))
