from __future__ import annotations

import pytest
from hypothesis import given

from pycluster import NodeName, NodeNameError, parse_node_name
from tests.hyp import node_names


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("app@10.0.0.5", NodeName("app", "10.0.0.5")),
        ("app@10.0.0.5:9101", NodeName("app", "10.0.0.5", 9101)),
        ("app@pod-1.svc.ns.svc.cluster.local", NodeName("app", "pod-1.svc.ns.svc.cluster.local")),
        ("app@[::1]:9101", NodeName("app", "::1", 9101)),
        ("app@[fd00::5]", NodeName("app", "fd00::5")),
    ],
)
def test_parses_the_written_forms(text: str, expected: NodeName) -> None:
    assert parse_node_name(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("app", "no '@' between name and host"),
        ("@host", "the part before '@'"),
        ("app@", "host after '@' is empty"),
        ("app@::1", "IPv6 host in brackets"),
        ("app@[::1", "missing ']'"),
        ("app@[10.0.0.1]", "not an IPv6 address"),
        ("app@host:0", "port '0'"),
        ("app@host:65536", "port '65536'"),
        ("app@host:x", "port 'x'"),
        ("app@ho st", "not a valid host name"),
        ("app@[::1]x", "expected ':port'"),
    ],
)
def test_rejects_bad_names_saying_why(text: str, reason: str) -> None:
    with pytest.raises(NodeNameError, match=reason.replace("[", r"\[").replace("'", "'")):
        parse_node_name(text)


@given(node_names())
def test_str_round_trips(text: str) -> None:
    parsed = parse_node_name(text)
    assert parse_node_name(str(parsed)) == parsed


def test_is_ip_tells_literals_from_host_names() -> None:
    assert parse_node_name("a@127.0.0.2").is_ip
    assert parse_node_name("a@[::1]").is_ip
    assert not parse_node_name("a@example.internal").is_ip
