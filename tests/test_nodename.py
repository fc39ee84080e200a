from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pycluster import NodeName, NodeNameError, parse_node_name
from tests.conftest import run_cli
from tests.hyp import node_name_texts, node_names, ports, written_forms


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("app@10.0.0.5", NodeName("app", "10.0.0.5")),
        ("app@10.0.0.5:9101", NodeName("app", "10.0.0.5", 9101)),
        ("app@pod-1.svc.ns.svc.cluster.local", NodeName("app", "pod-1.svc.ns.svc.cluster.local")),
        ("app@[::1]:9101", NodeName("app", "::1", 9101)),
        ("app@[fd00::5]", NodeName("app", "fd00::5")),
        # Numeric labels are fine in a host name, but for its last one.
        ("app@123.example", NodeName("app", "123.example")),
        ("app@0x7f.example:80", NodeName("app", "0x7f.example", 80)),
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
        # Digits of other scripts: '²' passes str.isdigit() but int() refuses it (it used
        # to escape as a bare ValueError); int() reads '٩١٠٠' as 9100.
        ("x@h:\u00b2", "port '\u00b2' is not a number from 1 to 65535"),
        ("x@h:\u0669\u0661\u0660\u0660", "port '\u0669\u0661\u0660\u0660'"),
        ("x@[::1]:\u00b2", "port '\u00b2'"),
        ("app@host:+80", "port '\\+80'"),
        ("app@host: 80", "port ' 80'"),
        ("app@host:80 ", "port '80 '"),
        ("app@host:123456", "port '123456'"),
        ("app@host:", "port ''"),
        # Hosts the C library would read as addresses, or that no DNS name can be.
        ("a@127.1", "'127.1' looks like an IPv4 address but is not one"),
        ("a@0x7f.1", "'0x7f.1' looks like an IPv4 address"),
        ("a@0x7f", "'0x7f' looks like an IPv4 address"),
        ("a@999.999.999.999", "looks like an IPv4 address"),
        ("a@010.0.0.1", "looks like an IPv4 address"),
        ("a@127.0.0.1.", "looks like an IPv4 address"),
        ("a@pod.123", "'pod.123' is not a host name: its last label is all digits"),
        ("a@[fe80::1%eth0]", "cannot carry a zone"),
        ("\u00e9@host", "the part before '@'"),
        ("app@h\u00e9", "not a valid host name"),
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


@pytest.mark.parametrize(
    ("text", "default_port", "canonical", "full"),
    [
        ("app@10.0.0.5", 9100, "app@10.0.0.5", "app@10.0.0.5:9100"),
        ("app@10.0.0.5:9100", 9100, "app@10.0.0.5", "app@10.0.0.5:9100"),
        # A port is dropped only when it is the reader's default port.
        ("app@10.0.0.5:9100", 19100, "app@10.0.0.5:9100", "app@10.0.0.5:9100"),
        ("app@10.0.0.5", 19100, "app@10.0.0.5", "app@10.0.0.5:19100"),
        # Host names are case-insensitive; the part before '@' is not.
        ("APP@Pod-1.Svc.Example", 9100, "APP@pod-1.svc.example", "APP@pod-1.svc.example:9100"),
        ("app@[0:0::1]", 9100, "app@[::1]", "app@[::1]:9100"),
        ("app@[FD00:0000::0005]:9101", 9100, "app@[fd00::5]:9101", "app@[fd00::5]:9101"),
    ],
)
def test_canonical_and_full_forms(text: str, default_port: int, canonical: str, full: str) -> None:
    parsed = parse_node_name(text)
    assert str(parsed.canonical(default_port)) == canonical
    assert str(parsed.full(default_port)) == full


def test_names_differing_before_the_at_sign_or_in_port_are_other_nodes() -> None:
    def canonical(text: str) -> NodeName:
        return parse_node_name(text).canonical(9100)

    assert canonical("app@host.example") != canonical("App@host.example")
    assert canonical("app@10.0.0.5:9101") != canonical("app@10.0.0.5")
    assert canonical("app@[::1]") != canonical("app@[::2]")


@given(st.data(), node_names(), ports, ports)
def test_every_written_form_has_one_canonical_and_one_full_form(
    data: st.DataObject, text: str, default_port: int, other_port: int
) -> None:
    parsed = parse_node_name(text)
    canonical, full = parsed.canonical(default_port), parsed.full(default_port)
    written = parse_node_name(data.draw(written_forms(text, default_port)))
    assert written.canonical(default_port) == canonical
    assert written.full(default_port) == full
    # Both forms are names in their own form; a full form means the same to any reader.
    assert parse_node_name(str(canonical)).canonical(default_port) == canonical
    assert parse_node_name(str(full)).full(other_port) == full
    assert parse_node_name(str(full)).canonical(default_port) == canonical
    assert full.port is not None


@settings(max_examples=3000)
@given(node_name_texts())
@example("x@h:\u00b2")
@example("a@b:" + "9" * 5000)  # int() refuses more than 4300 digits
def test_any_text_is_a_node_name_or_a_node_name_error(text: str) -> None:
    try:
        parsed = parse_node_name(text)
    except NodeNameError:
        return  # anything else (a bare ValueError, a TypeError) fails the test
    written = str(parsed)
    assert written.isascii()
    assert parse_node_name(written) == parsed
    assert str(parse_node_name(written)) == written


@pytest.mark.parametrize(
    ("name", "hosts", "where"),
    [
        ("x@h:\u00b2", ["a@127.0.0.3"], "node.name"),
        ("x@127.0.0.2", ["a@127.0.0.3", "b@h:\u00b2"], "topologies.static.config.hosts[1]"),
        ("x@127.0.0.2", ["a@h:\u0669\u0661\u0660\u0660"], "topologies.static.config.hosts[0]"),
        ("x@127.1", ["a@127.0.0.3"], "node.name"),
    ],
)
def test_check_refuses_a_bad_name_with_its_path_and_exit_2(
    tmp_path: Path, name: str, hosts: list[str], where: str
) -> None:
    path = tmp_path / "node.yaml"
    entries = ", ".join(f'"{host}"' for host in hosts)
    path.write_text(
        f'node: {{name: "{name}"}}\n'
        f"topologies:\n  static: {{strategy: epmd, config: {{hosts: [{entries}]}}}}\n",
        encoding="utf-8",
    )
    result = run_cli("check", str(path))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{where}: expected name@host or name@host:port (" in result.stderr, result.stderr
