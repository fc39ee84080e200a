from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycluster import ConfigError, Plugins, load_config
from pycluster.config import NodeConfig, RegistryConfig, describe, setting
from pycluster.config.convert import shown, structure
from pycluster.config.errors import ConfigIssue
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
        "bind, cookie, tls, net_tick_timeout, max_frame_size, http, ready",
        "node.name: expected name@host or name@host:port (the host after '@' is empty), got 'app@'",
        "node.port: expected a port number from 1 to 65535, got 70000",
        "topologies.static.config.hosts: expected a list of strings, got 'app@127.0.0.2'",
        "topologies.k8s.strategy: unknown strategy 'kubernetes.nope' "
        f"(known: {', '.join(sorted(Plugins.load().strategies()))}); "
        "did you mean 'kubernetes.dns'?",
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
        "topologies.files.config.polling_interval: expected a duration (a number of ms, or "
        "e.g. '500ms', '5s', '1m'), got 'fast'"
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
        ({"net_tick_timeout": "3"}, "node.net_tick_timeout: expected a duration (a number of s"),
        ({"net_tick_timeout": 3000}, "node.net_tick_timeout: expected a duration above 0"),
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


def test_a_misspelt_registry_backend_gets_a_suggestion() -> None:
    found = problems({"node": {"name": "app@127.0.0.2"}, "registry": {"backend": "crtd"}})
    known = ", ".join(sorted(Plugins.load().registry_backends()))
    assert found == [
        f"registry.backend: unknown registry backend 'crtd' (known: {known}); did you mean 'crdt'?"
    ]


def test_etcd_without_its_plugin_names_the_plugin_to_install() -> None:
    without = Plugins.load(entry_points=False)  # the built-in plugins only
    found = problems(
        {
            "node": {"name": "app@127.0.0.2"},
            "registry": {"backend": "etcd"},
            "topologies": {"discovery": {"strategy": "etcd"}},
        },
        plugins=without,
    )
    strategies = ", ".join(sorted(without.strategies()))
    backends = ", ".join(sorted(without.registry_backends()))
    plugin = "the pycluster-etcd plugin provides it: pip install pycluster-etcd"
    assert found == [
        f"topologies.discovery.strategy: unknown strategy 'etcd' (known: {strategies}); {plugin}",
        f"registry.backend: unknown registry backend 'etcd' (known: {backends}); {plugin}",
    ]


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
        "ready",
    ]
    assert rows["name"].default == "required"
    assert rows["port"].default == "9100"
    assert rows["port"].type == "an integer"
    assert all(row.doc for row in rows.values())


# -- durations ---------------------------------------------------------------------------------

DURATION_MS = "a duration (a number of ms, or e.g. '500ms', '5s', '1m')"


def hosts_file_interval(value: object, env: dict[str, str] | None = None) -> Any:
    topology = {"strategy": "hosts_file", "config": {"path": "/h", "polling_interval": value}}
    config = load_config(
        {"node": {"name": "app@127.0.0.2"}, "topologies": {"t": topology}}, env=env or {}
    )
    return config.topologies["t"].config.polling_interval


@pytest.mark.parametrize(
    ("written", "ms"),
    [
        (250, 250),
        (2.5, 2.5),
        ("500ms", 500),
        ("5s", 5000),
        ("1.5s", 1500),
        (".5s", 500),
        ("1m", 60_000),
        ("0.25m", 15_000),
    ],
)
def test_a_duration_is_a_number_in_its_keys_unit_or_a_string_with_a_unit(
    written: object, ms: float
) -> None:
    assert hosts_file_interval(written) == ms


def test_interpolated_durations_take_a_unit_or_the_keys_own() -> None:
    assert hosts_file_interval("${I}", env={"I": "750"}) == 750
    assert hosts_file_interval("${I}", env={"I": "2s"}) == 2000


@pytest.mark.parametrize(
    "written", ["fast", "500", "5 s", "-5s", "5h", "1e3ms", "s", "", True, [1], {"s": 1}]
)
def test_what_is_no_duration_is_refused_with_the_keys_unit(written: object) -> None:
    topology = {"strategy": "kubernetes", "config": {"selector": "a=b", "node_basename": "a"}}
    topology["config"]["polling_interval"] = written  # type: ignore[index]
    found = problems({"node": {"name": "app@127.0.0.2"}, "topologies": {"k8s": topology}})
    assert found == [
        f"topologies.k8s.config.polling_interval: expected {DURATION_MS}, got {shown(written)}"
    ]


def test_the_documented_duration_error() -> None:
    topology = {"strategy": "kubernetes", "config": {"selector": "a=b", "node_basename": "a"}}
    topology["config"]["polling_interval"] = "fast"  # type: ignore[index]
    assert problems({"node": {"name": "app@127.0.0.2"}, "topologies": {"k8s": topology}}) == [
        "topologies.k8s.config.polling_interval: expected a duration (a number of ms, or "
        "e.g. '500ms', '5s', '1m'), got 'fast'"
    ]


@pytest.mark.parametrize("written", [0, "0s", -1, "0ms"])
def test_a_duration_that_fails_its_check_says_so(written: object) -> None:
    topology = {"strategy": "hosts_file", "config": {"path": "/h", "polling_interval": written}}
    assert problems({"node": {"name": "app@127.0.0.2"}, "topologies": {"t": topology}}) == [
        f"topologies.t.config.polling_interval: expected a positive duration, got {shown(written)}"
    ]


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(["ms", "s", "m"]))
def test_whole_numbers_with_any_unit_convert_exactly(number: int, unit: str) -> None:
    factor = {"ms": 1, "s": 1000, "m": 60_000}[unit]
    assert hosts_file_interval(f"{number + 1}{unit}") == (number + 1) * factor


def test_a_registry_backends_durations_are_in_seconds() -> None:
    def ttl(value: object) -> Any:
        source = {
            "node": {"name": "app@127.0.0.2"},
            "registry": {"options": {"reservation_ttl": value}},
        }
        return load_config(source, env={}).registry.options.reservation_ttl

    assert (ttl(3), ttl("500ms"), ttl("1m")) == (3.0, 0.5, 60.0)
    assert problems(
        {"node": {"name": "app@127.0.0.2"}, "registry": {"options": {"reservation_ttl": "soon"}}}
    ) == [
        "registry.options.reservation_ttl: expected a duration (a number of seconds, or e.g. "
        "'500ms', '5s', '1m'), got 'soon'"
    ]


@attrs.frozen(kw_only=True)
class Timings:
    """What ``node.net_tick_timeout`` becomes with ``unit="s"``, and a whole-seconds TTL."""

    tick: float = setting(
        default=3.0,
        doc="Seconds of silence.",
        unit="s",
        expect="a number of seconds above 0 and at most 600",
        check=lambda v: None if 0 < v <= 600 else "out of range",
    )
    ttl: int = setting(default=10, doc="Whole seconds.", unit="s")
    wait: float | None = setting(default=None, doc="Optional.", unit="ms")


def timings(data: dict[str, Any]) -> tuple[Any, list[str]]:
    issues: list[ConfigIssue] = []
    value = structure(Timings, data, "x", issues)
    return value, [str(issue) for issue in issues]


def test_seconds_keys_whole_keys_and_optional_keys_take_durations() -> None:
    assert timings({"tick": "500ms", "ttl": "1m", "wait": "2s"}) == (
        Timings(tick=0.5, ttl=60, wait=2000.0),
        [],
    )
    assert timings({"tick": 2, "ttl": 5, "wait": None}) == (Timings(tick=2, ttl=5), [])
    _, issues = timings({"tick": "fast", "ttl": "1500ms"})
    assert issues == [
        "x.tick: expected a duration (a number of seconds, or e.g. '500ms', '5s', '1m'), "
        "got 'fast'",
        "x.ttl: expected a duration (a whole number of seconds, or e.g. '30s', '1m'), got '1500ms'",
    ]
    # A check that fails speaks with the key's `expect`.
    assert timings({"tick": "11m"})[1] == [
        "x.tick: expected a number of seconds above 0 and at most 600, got '11m'"
    ]


def test_the_reference_states_the_unit_of_every_duration() -> None:
    plugins = Plugins.load(entry_points=False)
    classes = [
        *((s.name, s.Config, "ms") for s in plugins.strategies().values()),
        *((name, b.Options, "seconds") for name, b in plugins.registry_backends().items()),
    ]
    durations = set()
    for name, cls, unit in classes:
        for field in describe(cls):
            if field.type.startswith("a duration"):
                assert field.type == f"a duration (a number of {unit}, or e.g. '500ms', '5s', '1m')"
                durations.add(f"{name}.{field.name}")
    assert durations == {
        "epmd.retry_interval",
        "hosts_file.polling_interval",
        "local_epmd.polling_interval",
        "gossip.heartbeat_interval",
        "kubernetes.polling_interval",
        *(
            f"{s}.{key}"
            for s in ("dns_poll", "kubernetes.dns", "kubernetes.dnssrv")
            for key in ("polling_interval", "timeout")
        ),
        "crdt.reservation_ttl",
    }


def test_net_tick_timeout_takes_a_duration_or_seconds() -> None:
    for value, seconds in (("1500ms", 1.5), ("2s", 2.0), ("1m", 60.0), (3, 3.0)):
        config = load_config({"node": {"name": "a@127.0.0.2", "net_tick_timeout": value}}, env={})
        assert config.node.net_tick_timeout == seconds


K8S_CONFIG = {"selector": "app=x", "node_basename": "app"}


def test_a_strategy_whose_package_is_missing_is_refused_with_the_pip_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kubernetes = Plugins.load().strategies()["kubernetes"]
    assert kubernetes.requires == {"kubernetes": "pycluster[kubernetes]"}  # type: ignore[attr-defined]
    monkeypatch.setattr(
        kubernetes, "requires", {"pycluster_test_not_installed": "pycluster[kubernetes]"}
    )
    found = problems(
        {
            "node": {"name": "app@127.0.0.2"},
            "topologies": {"k8s": {"strategy": "kubernetes", "config": K8S_CONFIG}},
        }
    )
    assert found == [
        "topologies.k8s.strategy: strategy 'kubernetes' needs the Python package "
        "'pycluster_test_not_installed', which is not installed: "
        "pip install 'pycluster[kubernetes]'"
    ]


def test_a_registry_backend_whose_package_is_missing_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crdt = Plugins.load().registry_backends()["crdt"]
    monkeypatch.setattr(
        crdt, "requires", {"pycluster_test_absent": "pycluster-absent>=1"}, raising=False
    )
    found = problems({"node": {"name": "app@127.0.0.2"}, "registry": {"backend": "crdt"}})
    assert found == [
        "registry.backend: registry backend 'crdt' needs the Python package "
        "'pycluster_test_absent', which is not installed: pip install 'pycluster-absent>=1'"
    ]
