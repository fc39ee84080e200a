"""The ``pycluster`` command as users run it: a real process, real exit codes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest


def pycluster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pycluster", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_check_accepts_a_valid_config(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(
        "node: {name: app@127.0.0.2}\n"
        "topologies:\n"
        "  static: {strategy: epmd, config: {hosts: [app@127.0.0.3]}}\n"
    )
    result = pycluster("check", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"{path}: ok: node app@127.0.0.2 (port 9100), registry none, 1 topology: static (epmd)"
    )


def test_check_prints_all_five_mistakes_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "node:\n"
        "  name: app\n"
        "  port: 0\n"
        "  max_frame_sise: 10\n"
        "topologies:\n"
        "  k8s:\n"
        "    strategy: kubernetes.dns\n"
        "  files:\n"
        "    strategy: hosts_file\n"
        "    config: {path: /etc/nodes, polling_interval: fast}\n"
    )
    result = pycluster("check", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"pycluster: {path}: 5 problems in the config"
    paths = [line.strip().split(":", 1)[0] for line in lines[1:]]
    assert paths == [
        "node.max_frame_sise",
        "node.name",
        "node.port",
        "topologies.k8s.strategy",
        "topologies.files.config.polling_interval",
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("node: {name: [\n", "malformed YAML"),
        ("node: 5\n", "node: expected a mapping, got 5"),
    ],
)
def test_check_fails_cleanly(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "config.yaml"
    if content is not None:
        path.write_text(content)
    result = pycluster("check", str(path))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_forms_the_cluster_and_exits_0() -> None:
    result = pycluster("demo", "--nodes", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cluster formed in" in result.stdout
    names = re.findall(r"^  (demo\d@127\.0\.0\.1:\d+) \(pid (\d+)\)$", result.stdout, re.M)
    assert len(names) == 4
    for name, _ in names:
        others = sorted(other for other, _ in names if other != name)
        assert f"  {name} sees {', '.join(others)}" in result.stdout
    # Every node process it started is gone.
    for _, pid in names:
        assert not Path(f"/proc/{pid}").exists()


def test_demo_rejects_a_bad_node_count() -> None:
    result = pycluster("demo", "--nodes", "0")
    assert result.returncode == 2
    assert "expected a number of nodes from 1 to 20" in result.stderr


@pytest.mark.parametrize(
    "example", sorted(Path(__file__).parent.parent.joinpath("examples").glob("*.yaml"))
)
def test_shipped_example_configs_are_valid(example: Path) -> None:
    result = pycluster("check", str(example))
    assert result.returncode == 0, result.stderr
