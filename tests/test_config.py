from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycluster import ConfigError, Plugins, load_config
from pycluster.config import NodeConfig, RegistryConfig, describe
from pycluster.config.schema import DEFAULT_MAX_FRAME_SIZE
from pycluster.registry.crdt import CrdtOptions
from pycluster.strategies.epmd import EpmdConfig
from tests.hyp import node_names


def problems(source: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(source, env=kwargs.pop("env", {}), **kwargs)
    return [str(issue) for issue in info.value.issues]


def test_minimal_config_gets_defaults() -> None:
    config = load_config({"node": {"name": "app@127.0.0.2"}}, env={})
    assert config.node == NodeConfig(name="app@127.0.0.2")
    assert config.node.port == 9100
    assert config.node.net_tick_timeout == 3.0
    assert config.node.max_frame_size == DEFAULT_MAX_FRAME_SIZE
    assert config.registry == RegistryConfig(backend="crdt", options=CrdtOptions())
    assert config.topologies == {}


def test_strategy_config_is_built_by_the_strategys_class() -> None:
    config = load_config(
        {
            "node": {"name": "app@127.0.0.2"},
            "topologies": {"static": {"strategy": "epmd", "config": {"hosts": ["a@127.0.0.3"]}}},
        },
        env={},
    )
    assert config.topologies["static"].config == EpmdConfig(hosts=("a@127.0.0.3",))


def test_five_mistakes_are_all_reported_with_their_paths(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        """
node:
  name: app@
  port: 70000
  cookei: secret
topologies:
  static:
    strategy: epmd
    config:
      hosts: app@127.0.0.2
  k8s:
    strategy: kubernetes.nope
"""
    )
    found = problems(path)
    assert found == [
        "node.cookei: unknown key 'cookei' (did you mean 'cookie'?); known keys: name, port, "
        "bind, cookie, tls, net_tick_timeout, max_frame_size, http",
        "node.name: expected name@host or name@host:port (the host after '@' is empty), got 'app@'",
        "node.port: expected a port number from 1 to 65535, got 70000",
        "topologies.static.config.hosts: expected a list of strings, got 'app@127.0.0.2'",
        "topologies.k8s.strategy: unknown strategy 'kubernetes.nope' "
        f"(known: {', '.join(sorted(Plugins.load().strategies()))})",
    ]


def test_strategy_keys_are_checked_with_their_full_path() -> None:
    found = problems(
        {
            "node": {"name": "app@127.0.0.2"},
            "topologies": {
                "files": {
                    "strategy": "hosts_file",
                    "config": {"path": "/etc/hosts.pycluster", "polling_interval": "fast"},
                }
            },
        }
    )
    assert found == [
        "topologies.files.config.polling_interval: expected a positive number of ms, got 'fast'"
    ]


def test_missing_required_keys_are_named() -> None:
    assert problems({"topologies": {"x": {"config": {}}}}) == [
        "node: required key is missing",
        "topologies.x.strategy: required key is missing",
    ]


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ({"port": "9100"}, "node.port: expected an integer, got '9100'"),
        ({"port": True}, "node.port: expected an integer, got true"),
        ({"port": 9100.0}, "node.port: expected an integer, got 9100.0"),
        ({"net_tick_timeout": "3"}, "node.net_tick_timeout: expected a number of seconds"),
        ({"net_tick_timeout": 3000}, "node.net_tick_timeout: expected a number of seconds"),
        ({"bind": "eth0"}, "node.bind: expected an IP address"),
        ({"max_frame_size": 10}, "node.max_frame_size: expected a size in bytes"),
        ({"http": {"port": 0}}, "node.http.port: expected a port number from 1 to 65535, got 0"),
        ({"http": 8080}, "node.http: expected a mapping, got 8080"),
        ({"tls": {"certfile": "c.pem"}}, "node.tls.keyfile: required key is missing"),
    ],
)
def test_no_silent_coercion(node: dict[str, Any], expected: str) -> None:
    found = problems({"node": {"name": "app@127.0.0.2", **node}})
    assert found[0].startswith(expected), found


def test_a_string_is_not_a_one_item_list() -> None:
    found = problems(
        {
            "node": {"name": "app@127.0.0.2"},
            "topologies": {"s": {"strategy": "epmd", "config": {"hosts": "a@127.0.0.3"}}},
        }
    )
    assert found == ["topologies.s.config.hosts: expected a list of strings, got 'a@127.0.0.3'"]


def test_list_items_are_checked_with_their_index() -> None:
    found = problems(
        {
            "node": {"name": "app@127.0.0.2"},
            "topologies": {
                "s": {"strategy": "epmd", "config": {"hosts": ["a@127.0.0.3", "nope", 5]}}
            },
        }
    )
    assert found == [
        "topologies.s.config.hosts[1]: expected name@host or name@host:port "
        "(no '@' between name and host), got 'nope'",
        "topologies.s.config.hosts[2]: expected a string, got 5",
    ]


def test_bad_list_item_names_are_reported_per_index() -> None:
    found = problems(
        {
            "node": {"name": "app@127.0.0.2"},
            "topologies": {"s": {"strategy": "epmd", "config": {"hosts": ["a@127.0.0.3", "x"]}}},
        }
    )
    assert len(found) == 1
    assert found[0].startswith("topologies.s.config.hosts[1]: expected name@host")
    assert found[0].endswith("got 'x'")


def test_secrets_are_never_echoed() -> None:
    found = problems({"node": {"name": "app@127.0.0.2", "cookie": 12345678}})
    assert found == ["node.cookie: expected a string or a list of strings, got a value (hidden)"]
    config = load_config({"node": {"name": "a@b", "cookie": "s3-long-enough-cookie"}}, env={})
    assert "s3-long" not in repr(config)
    found = problems({"node": {"name": "app@127.0.0.2", "cookie": ["a-long-enough-cookie", 7]}})
    assert found == ["node.cookie[1]: expected a string, got a value (hidden)"]


def test_interpolation_with_defaults_and_numbers() -> None:
    raw = {"node": {"name": "app@${POD_IP}", "port": "${PORT:-9101}", "cookie": "${C:-x}$$y" * 8}}
    config = load_config(raw, env={"POD_IP": "10.1.2.3"})
    assert config.node.name == "app@10.1.2.3"
    assert config.node.port == 9101
    assert config.node.cookie == "x$y" * 8
    config = load_config(raw, env={"POD_IP": "10.1.2.3", "PORT": "9200"})
    assert config.node.port == 9200


def test_empty_interpolation_leaves_an_optional_key_unset() -> None:
    raw = {"node": {"name": "app@10.0.0.1", "bind": "${BIND:-}"}}
    assert load_config(raw, env={}).node.bind is None
    assert load_config(raw, env={"BIND": "10.0.0.9"}).node.bind == "10.0.0.9"
    assert problems({"node": {"name": "app@10.0.0.1", "bind": ""}}) == [
        "node.bind: expected an IP address (IPv4, or IPv6 without brackets), got ''"
    ]


def test_interpolated_values_are_still_checked() -> None:
    raw = {"node": {"name": "app@10.0.0.1", "port": "${PORT}"}}
    assert problems(raw, env={"PORT": "abc"}) == ["node.port: expected an integer, got 'abc'"]
    assert problems(raw, env={"PORT": "99999"}) == [
        "node.port: expected a port number from 1 to 65535, got '99999'"
    ]


def test_unset_variable_is_one_problem_naming_it() -> None:
    found = problems({"node": {"name": "app@${POD_IP}"}})
    assert found == [
        "node.name: environment variable POD_IP is not set (give a default with ${POD_IP:-value})"
    ]


def test_malformed_interpolation() -> None:
    found = problems({"node": {"name": "app@${POD_IP"}})
    assert found[0].startswith("node.name: malformed ${...}")


def test_overrides_replace_file_values() -> None:
    config = load_config(
        {"node": {"name": "app@127.0.0.2"}},
        env={},
        overrides={"node.name": "other@127.0.0.3", "node.port": 9200},
    )
    assert (config.node.name, config.node.port) == ("other@127.0.0.3", 9200)


def test_unknown_registry_backend_lists_the_known_ones() -> None:
    found = problems({"node": {"name": "app@127.0.0.2"}, "registry": {"backend": "zk"}})
    known = sorted(Plugins.load().registry_backends())
    assert {"crdt", "local"} <= set(known)
    assert found == [f"registry.backend: unknown registry backend 'zk' (known: {', '.join(known)})"]


def test_topology_names_are_checked() -> None:
    found = problems(
        {
            "node": {"name": "app@127.0.0.2"},
            "topologies": {"bad name": {"strategy": "epmd", "config": {"hosts": ["a@b"]}}},
        }
    )
    assert found == ["topologies.bad name: topology names are letters, digits, '_', '-' and '.'"]


def test_yaml_problems(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    assert problems(missing) == ["no such file"]
    broken = tmp_path / "broken.yaml"
    broken.write_text("node: [\n")
    assert problems(broken)[0].startswith("malformed YAML: line 2, column 1")
    duplicate = tmp_path / "dup.yaml"
    duplicate.write_text("node:\n  name: a@b\n  name: c@d\n")
    assert problems(duplicate) == ["malformed YAML: line 3, column 3: duplicate key 'name'"]
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n")
    assert problems(listed) == ["expected a mapping at the top of the file"]
    evil = tmp_path / "evil.yaml"
    evil.write_text("node: !!python/object/apply:os.system ['true']\n")
    assert problems(evil)[0].startswith("malformed YAML")


@given(node_names())
def test_any_valid_node_name_is_accepted(name: str) -> None:
    assert load_config({"node": {"name": name}}, env={}).node.name == name


@given(st.integers() | st.text(max_size=8) | st.floats(allow_nan=False) | st.booleans())
def test_ports_outside_range_or_type_are_rejected(port: object) -> None:
    valid = isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535
    source = {"node": {"name": "a@127.0.0.2", "port": port}}
    if valid:
        assert load_config(source, env={}).node.port == port
    else:
        with pytest.raises(ConfigError) as info:
            load_config(source, env={})
        assert [issue.path for issue in info.value.issues] == ["node.port"]


def test_describe_lists_every_key_with_type_and_default() -> None:
    rows = {row.name: row for row in describe(NodeConfig)}
    assert list(rows) == [
        "name",
        "port",
        "bind",
        "cookie",
        "tls",
        "net_tick_timeout",
        "max_frame_size",
        "http",
    ]
    assert rows["name"].default == "required"
    assert rows["port"].default == "9100"
    assert rows["port"].type == "an integer"
    assert all(row.doc for row in rows.values())
