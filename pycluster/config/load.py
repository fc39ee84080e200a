"""Loading a config: read YAML (or take a dict), interpolate, validate everything at once."""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
from collections.abc import Hashable, Mapping
from typing import Any, Protocol

import attrs
import yaml

from pycluster.config.convert import INVALID, structure
from pycluster.config.errors import ConfigError, ConfigIssue, join_path
from pycluster.config.interpolate import MAX_DEPTH, interpolate
from pycluster.config.schema import Config


class _Configured(Protocol):
    """A strategy class: its ``Config`` validates a topology's ``config``."""

    @property
    def Config(self) -> type[Any]: ...


class _WithOptions(Protocol):
    """A registry backend class: its ``Options`` validates ``registry.options``."""

    @property
    def Options(self) -> type[Any]: ...


class Extensions(Protocol):
    """Where the strategies and registry backends come from (:class:`~pycluster.Plugins`)."""

    def strategies(self) -> Mapping[str, _Configured]: ...

    def registry_backends(self) -> Mapping[str, _WithOptions]: ...


PLUGINS_PROVIDING: Mapping[str, Mapping[str, str]] = {
    "strategy": {"etcd": "pycluster-etcd"},
    "registry backend": {"etcd": "pycluster-etcd"},
}
"""For each kind of extension, names that a known plugin distribution provides: an unknown
name among them is a plugin to install, not a typo."""

_TOPOLOGY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


MAX_CONFIG_BYTES = 1024 * 1024
"""Config files larger than this are refused before they are parsed."""

MAX_VALUES = 10_000
"""A document may hold at most this many values (keys, scalars, mappings and lists), counting
each use of an alias as the whole value it stands for."""


class _Refused(yaml.MarkedYAMLError):
    """Well-formed YAML beyond the loader's limits."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last one silently, and
    refuses documents nested too deep or too big once their aliases are expanded.

    A few hundred bytes of nested aliases can stand for billions of values; constructing
    them shares objects, but every later walk over the data (interpolation, validation)
    pays for each one, and deep nesting exhausts the stack. So both are counted while
    composing, before anything is built.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._values = 0
        self._sizes: dict[str, int] = {}  # anchor -> how many values it stands for

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.NodeEvent = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)  # refuses an undefined alias
            size = self._sizes.get(event.anchor or "")
            if size is None:
                raise _refused(f"alias *{event.anchor} is used inside the value it names", event)
            self._count(size, event)
            return node
        nested = isinstance(event, yaml.CollectionStartEvent)
        self._depth += nested
        if self._depth > MAX_DEPTH:
            raise _refused(f"more than {MAX_DEPTH} levels of nesting", event)
        before = self._values
        self._count(1, event)
        node = super().compose_node(parent, index)
        self._depth -= nested
        if event.anchor is not None:
            self._sizes[event.anchor] = self._values - before
        return node

    def _count(self, values: int, event: yaml.NodeEvent) -> None:
        self._values += values
        if self._values > MAX_VALUES:
            raise _refused(f"more than {MAX_VALUES:,} values once aliases are expanded", event)


def _refused(problem: str, event: yaml.Event) -> _Refused:
    mark = event.start_mark if isinstance(event.start_mark, yaml.Mark) else None
    return _Refused(None, None, problem, mark)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                "a key cannot be a list or a mapping",
                key_node.start_mark,
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"duplicate key {key!r}",
                key_node.start_mark,
            )
        seen[key] = loader.construct_object(value_node, deep=True)
    return seen


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | os.PathLike[str]) -> object:
    """Parse a YAML file safely; a missing, unreadable, malformed or too large file raises
    ConfigError."""
    source = str(path)
    loader = _Loader(_read_text(path, source))
    try:
        return loader.get_single_data()
    except _Refused as exc:
        raise ConfigError([ConfigIssue("", _yaml_reason(exc))], source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            [ConfigIssue("", f"malformed YAML: {_yaml_reason(exc)}")], source
        ) from None
    except RecursionError:  # the limits above should make this unreachable
        raise ConfigError([ConfigIssue("", "nested too deeply")], source) from None
    finally:
        loader.dispose()


def _read_text(path: str | os.PathLike[str], source: str) -> str:
    """The file's text, refused without reading it all when it is over the size limit."""
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            # One byte past the limit tells a pipe or a /proc file (size 0) that is too big.
            raw = b"" if size > MAX_CONFIG_BYTES else file.read(MAX_CONFIG_BYTES + 1)
        if size > MAX_CONFIG_BYTES or len(raw) > MAX_CONFIG_BYTES:
            found = f"{size}" if size > MAX_CONFIG_BYTES else f"more than {MAX_CONFIG_BYTES}"
            limit = f"{MAX_CONFIG_BYTES / 2**20:g} MiB"
            message = f"config file is {found} bytes; the limit is {limit}"
            raise ConfigError([ConfigIssue("", message)], source)
        return raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigIssue("", "no such file")], source) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([ConfigIssue("", f"cannot read: {reason}")], source) from None


def _yaml_reason(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return str(exc)


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
    plugins: Extensions,
) -> Config:
    """Load and validate a whole config, from a YAML file path or an already parsed dict.

    ``env`` (default: the process environment) feeds ``${VAR}`` interpolation; ``overrides``
    maps dotted keys (``node.name``) to values that replace the file's, as command-line flags
    do. Strategy and backend configs are validated by the classes ``plugins`` provide
    (:func:`pycluster.load_config` passes the installed plugins).
    Raises :class:`ConfigError` listing every problem found.
    """
    label = None if isinstance(source, Mapping) else str(source)
    data = dict(source) if isinstance(source, Mapping) else read_yaml(source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue("", "expected a mapping at the top of the file")], label)
    unset: list[ConfigIssue] = []
    data = interpolate(data, os.environ if env is None else env, unset)
    assert isinstance(data, dict)
    for dotted, value in (overrides or {}).items():
        _override(data, dotted.split("."), value)
    issues: list[ConfigIssue] = []
    config = structure(Config, data, "", issues)
    topology_configs, registry_options = _plugin_configs(data, plugins, issues)
    if issues or unset:
        # A value whose interpolation failed is reported once, not again for its type.
        unset_paths = {issue.path for issue in unset}
        raise ConfigError([*unset, *(i for i in issues if i.path not in unset_paths)], label)
    assert config is not INVALID
    topologies = {
        name: attrs.evolve(topology, config=topology_configs[name])
        for name, topology in config.topologies.items()
    }
    registry = attrs.evolve(config.registry, options=registry_options)
    loaded: Config = attrs.evolve(config, topologies=topologies, registry=registry)
    return loaded


def _override(data: dict[str, Any], keys: list[str], value: object) -> None:
    for key in keys[:-1]:
        inner = data.get(key)
        if not isinstance(inner, dict):
            inner = data[key] = {}
        data = inner
    data[keys[-1]] = value


def _plugin_configs(
    data: dict[str, Any], plugins: Extensions, issues: list[ConfigIssue]
) -> tuple[dict[str, Any], Any]:
    """Validate each topology's ``config`` and ``registry.options`` with the plugins' classes."""
    built: dict[str, Any] = {}
    options: Any = None
    topologies = data.get("topologies")
    if isinstance(topologies, dict):
        strategies = plugins.strategies()
        for name, raw in topologies.items():
            path = join_path("topologies", name)
            if isinstance(name, str) and not _TOPOLOGY_NAME.fullmatch(name):
                issues.append(
                    ConfigIssue(path, "topology names are letters, digits, '_', '-' and '.'")
                )
            if not isinstance(raw, dict) or not isinstance(raw.get("strategy"), str):
                continue
            strategy = strategies.get(raw["strategy"])
            if strategy is None:
                message = _unknown("strategy", raw["strategy"], strategies)
                issues.append(ConfigIssue(join_path(path, "strategy"), message))
                continue
            missing = _missing_requirement("strategy", raw["strategy"], strategy)
            if missing is not None:
                issues.append(ConfigIssue(join_path(path, "strategy"), missing))
            raw_config = raw.get("config", {})
            built[name] = structure(strategy.Config, raw_config, join_path(path, "config"), issues)
    registry = data.get("registry", {})
    if isinstance(registry, dict):
        backend_name = registry.get("backend", "crdt")
        if isinstance(backend_name, str):
            backends = plugins.registry_backends()
            backend = backends.get(backend_name)
            if backend is None:
                message = _unknown("registry backend", backend_name, backends)
                issues.append(ConfigIssue("registry.backend", message))
            else:
                missing = _missing_requirement("registry backend", backend_name, backend)
                if missing is not None:
                    issues.append(ConfigIssue("registry.backend", missing))
                raw_options = registry.get("options", {})
                options = structure(backend.Options, raw_options, "registry.options", issues)
    return built, options


def _missing_requirement(kind: str, name: str, extension: object) -> str | None:
    """What to install when a Python package that strategy or backend ``name`` needs is
    missing, else None. ``extension.requires`` maps the top-level modules it imports to
    the pip requirement that installs them (``{"kubernetes": "pycluster[kubernetes]"}``)."""
    requires: Mapping[str, str] = getattr(extension, "requires", {})
    for module, requirement in requires.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return (
                f"{kind} {name!r} needs the Python package {module!r}, which is not "
                f"installed: pip install '{requirement}'"
            )
    return None


def _unknown(kind: str, name: str, known: Mapping[str, object]) -> str:
    """The problem with an unknown strategy or backend ``name``: the known ones, then the
    plugin that provides it, or else the known name it is closest to."""
    message = f"unknown {kind} {name!r} (known: {', '.join(sorted(known)) or 'none installed'})"
    plugin = PLUGINS_PROVIDING.get(kind, {}).get(name)
    if plugin is not None:
        return f"{message}; the {plugin} plugin provides it: pip install {plugin}"
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"{message}; did you mean {close[0]!r}?" if close else message
