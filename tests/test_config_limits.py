"""Config loading cannot be bombed: size, expanded values and depth are capped, and every
refusal is a config problem, never a traceback or a machine out of memory."""

from __future__ import annotations

import math
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, target
from hypothesis import strategies as st

from pycluster import ConfigError, load_config
from pycluster.config import ConfigIssue, read_yaml
from pycluster.config.interpolate import MAX_DEPTH, interpolate
from pycluster.config.load import MAX_CONFIG_BYTES, MAX_VALUES
from tests.hyp import alias_documents, env_names, nestings

TOO_MANY = f"more than {MAX_VALUES:,} values once aliases are expanded"
TOO_DEEP = f"more than {MAX_DEPTH} levels of nesting"
NESTED_DEFAULT = "nested ${...} in a default is not supported"


def billion_laughs(levels: int = 8) -> str:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def refusal(path: Path) -> ConfigIssue:
    """The one problem ``read_yaml`` finds in ``path`` (it must be about the whole file)."""
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    assert info.value.source == str(path)
    (issue,) = info.value.issues
    assert issue.path == ""
    return issue


def nested_lists(depth: int) -> list[Any]:
    """``depth`` lists nested in one another, built without recursion."""
    data: list[Any] = []
    for _ in range(depth - 1):
        data = [data]
    return data


def expanded_size(data: object, sizes: dict[int, int] | None = None) -> int:
    """Values in ``data`` with every shared object counted at each use (memoised by id)."""
    sizes = {} if sizes is None else sizes
    if id(data) not in sizes:
        if isinstance(data, dict):
            inner = [x for item in data.items() for x in item]
        else:
            inner = data if isinstance(data, list) else []
        sizes[id(data)] = 1 + sum(expanded_size(x, sizes) for x in inner)
    return sizes[id(data)]


# -- size ------------------------------------------------------------------------------------


def test_a_file_over_1_mib_is_refused_and_one_at_the_limit_is_read(tmp_path: Path) -> None:
    assert MAX_CONFIG_BYTES == 2**20
    path = tmp_path / "config.yaml"
    head = "node: {name: app@127.0.0.2}\n#"
    path.write_text(head + "x" * (MAX_CONFIG_BYTES - len(head) - 1) + "\n")
    assert read_yaml(path) == {"node": {"name": "app@127.0.0.2"}}
    with path.open("a") as file:
        file.write("\n")
    issue = refusal(path)
    assert issue.message == f"config file is {MAX_CONFIG_BYTES + 1} bytes; the limit is 1 MiB"


def test_a_huge_file_is_refused_without_being_read(tmp_path: Path) -> None:
    path = tmp_path / "sparse.yaml"
    with path.open("wb") as file:
        file.truncate(64 * 2**30)  # 64 GiB that take no disk space, until someone reads them
    started = time.monotonic()
    issue = refusal(path)
    assert time.monotonic() - started < 1
    assert issue.message == f"config file is {64 * 2**30} bytes; the limit is 1 MiB"


def test_a_file_without_a_size_is_read_only_up_to_the_limit() -> None:
    # /dev/zero stats as 0 bytes and never ends.
    issue = refusal(Path("/dev/zero"))
    assert issue.message == f"config file is more than {MAX_CONFIG_BYTES} bytes; the limit is 1 MiB"


# -- values once aliases are expanded --------------------------------------------------------


def test_billion_laughs_is_refused_at_once_in_little_memory(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(billion_laughs(8))  # 9**8 = 43 million "lol"s once expanded
    tracemalloc.start()
    started = time.monotonic()
    try:
        issue = refusal(path)
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert issue.message == f"line 5, column 10: {TOO_MANY}"
    assert elapsed < 1
    assert peak < 5 * 2**20


def test_every_key_scalar_list_and_mapping_counts_up_to_the_limit(tmp_path: Path) -> None:
    # The top mapping, its key and the list are 3 values; the list's items are the rest.
    path = tmp_path / "flat.yaml"
    path.write_text("a:\n" + "- 1\n" * (MAX_VALUES - 3))
    assert read_yaml(path) == {"a": [1] * (MAX_VALUES - 3)}
    path.write_text("a:\n" + "- 1\n" * (MAX_VALUES - 2))
    assert refusal(path).message == f"line {MAX_VALUES - 1}, column 3: {TOO_MANY}"


def test_each_use_of_an_alias_counts_the_whole_value_it_names(tmp_path: Path) -> None:
    # The top mapping, keys a and b, list b, and list a with its 83 items at each use.
    path = tmp_path / "aliases.yaml"
    for uses in (118, 119):
        text = "a: &a [" + ", ".join(["x"] * 83) + "]\nb: [" + ", ".join(["*a"] * uses) + "]\n"
        assert expanded_size(yaml.safe_load(text)) == 4 + 84 * (1 + uses)
        path.write_text(text)
        if 4 + 84 * (1 + uses) <= MAX_VALUES:
            assert len(read_yaml(path)["b"]) == uses  # type: ignore[index]
        else:
            assert refusal(path).message.endswith(TOO_MANY)


@given(alias_documents())
def test_a_document_is_refused_exactly_when_its_expansion_is_too_big(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    expected = yaml.safe_load(text)  # shares aliased objects: cheap even for a bomb
    size = expanded_size(expected)
    target(-abs(math.log(size / MAX_VALUES)), label="distance from the limit")
    path = tmp_path_factory.mktemp("aliases") / "config.yaml"
    path.write_text(text)
    if size > MAX_VALUES:
        assert refusal(path).message.endswith(TOO_MANY)
    else:
        assert read_yaml(path) == expected


def test_an_alias_inside_the_value_it_names_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("a: &a [x, *a]\n")
    assert refusal(path).message == "line 1, column 11: alias *a is used inside the value it names"


def test_a_list_or_mapping_as_a_key_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "key.yaml"
    path.write_text("? [a]\n: 1\n")
    assert refusal(path).message == (
        "malformed YAML: line 1, column 3: a key cannot be a list or a mapping"
    )


def test_an_alias_shared_thousands_of_times_is_interpolated_once() -> None:
    # Each use of *a is the same string of 20,000 '$$': expanding it at every use took
    # seconds per thousand uses.
    text = "$$" * 20_000
    started = time.monotonic()
    issues: list[ConfigIssue] = []
    out = interpolate({"a": text, "b": [text] * 1_000}, {}, issues)
    assert time.monotonic() - started < 1
    assert out == {"a": "$" * 20_000, "b": ["$" * 20_000] * 1_000}
    assert issues == []


# -- depth -----------------------------------------------------------------------------------


@given(nestings, st.integers(min_value=1, max_value=2 * MAX_DEPTH))
def test_nesting_is_refused_exactly_beyond_the_limit(
    tmp_path_factory: pytest.TempPathFactory, nest: Callable[[int], str], depth: int
) -> None:
    path = tmp_path_factory.mktemp("deep") / "config.yaml"
    path.write_text(nest(depth) + "\n")
    if depth > MAX_DEPTH:
        assert refusal(path).message.endswith(TOO_DEEP)
    else:
        assert read_yaml(path) == yaml.safe_load(nest(depth))


def test_the_top_mapping_is_the_first_level(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n")
    assert read_yaml(path) == {"a": nested_lists(MAX_DEPTH - 1)}
    path.write_text("a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n")
    assert refusal(path).message == f"line 1, column {3 + MAX_DEPTH}: {TOO_DEEP}"


def test_100_000_levels_of_yaml_are_a_problem_not_a_recursion_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert refusal(path).message.endswith(TOO_DEEP)


def test_deep_data_is_a_problem_at_its_path() -> None:
    # The top mapping is level 1, so the lists start at level 2.
    for depth in (MAX_DEPTH - 1, MAX_DEPTH, 100_000):
        issues: list[ConfigIssue] = []
        interpolate({"a": nested_lists(depth)}, {}, issues)
        too_deep = [ConfigIssue("a" + "[0]" * (MAX_DEPTH - 1), TOO_DEEP)]
        assert issues == (too_deep if depth >= MAX_DEPTH else [])


def test_data_that_contains_itself_is_a_problem() -> None:
    data: dict[str, Any] = {"node": {"name": "app@127.0.0.2"}}
    data["loop"] = data
    with pytest.raises(ConfigError) as info:
        load_config(data, env={})
    assert ConfigIssue(".".join(["loop"] * MAX_DEPTH), TOO_DEEP) in info.value.issues


def test_a_recursion_error_is_still_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the depth limits lifted, the stack runs out: the last resort reports it.
    monkeypatch.setattr("pycluster.config.load.MAX_DEPTH", 10**9)
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert refusal(path).message == "nested too deeply"
    monkeypatch.setattr("pycluster.config.interpolate.MAX_DEPTH", 10**9)
    issues: list[ConfigIssue] = []
    interpolate(nested_lists(100_000), {}, issues)
    assert issues == [ConfigIssue("", "nested too deeply")]


# -- interpolation defaults ------------------------------------------------------------------


@pytest.mark.parametrize("env", [{}, {"A": "set"}])
@pytest.mark.parametrize("value", ["${A:-${B}}", "x${A:-${B:-y}}z", "${A:-$${B}}"])
def test_a_nested_default_is_a_problem_at_its_path(env: dict[str, str], value: str) -> None:
    issues: list[ConfigIssue] = []
    interpolate({"topologies": {"t": {"config": {"path": value}}}}, env, issues)
    assert issues == [ConfigIssue("topologies.t.config.path", NESTED_DEFAULT)]


@given(env_names, st.text(), st.booleans(), st.text(), st.booleans())
def test_a_default_is_used_as_written_unless_it_holds_a_reference(
    name: str, before: str, nested: bool, after: str, is_set: bool
) -> None:
    default = (before + ("${" if nested else "") + after).replace("}", "")
    issues: list[ConfigIssue] = []
    env = {name: "set"} if is_set else {}
    out = interpolate({"v": "${" + name + ":-" + default + "}"}, env, issues)
    if "${" in default:
        assert issues == [ConfigIssue("v", NESTED_DEFAULT)]
    else:
        assert (out, issues) == ({"v": "set" if is_set else default}, [])


def test_the_limits_are_the_documented_ones() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    limits = docs.split("\n## Limits\n", 1)[1]
    assert (MAX_CONFIG_BYTES, MAX_VALUES, MAX_DEPTH) == (2**20, 10_000, 100)
    for stated in ("1 MiB", "10,000 values", "100 levels"):
        assert stated in limits
