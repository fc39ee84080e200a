"""The ``pycluster`` command as users run it: a real process, real exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import run_cli
from tests.lab.node import parse_records
from tests.lab.polling import until


def test_check_accepts_a_valid_config(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(
        "node: {name: app@127.0.0.2}\n"
        "topologies:\n"
        "  static: {strategy: epmd, config: {hosts: [app@127.0.0.3]}}\n"
    )
    result = run_cli("check", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"{path}: ok: node app@127.0.0.2 (port 9100), registry crdt, 1 topology: static (epmd)"
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
        "    strategy: consul\n"
        "  files:\n"
        "    strategy: hosts_file\n"
        "    config: {path: /etc/nodes, polling_interval: fast}\n"
    )
    result = run_cli("check", str(path))
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
    result = run_cli("check", str(path))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_forms_the_cluster_and_exits_0() -> None:
    result = run_cli("demo", "--nodes", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cluster formed in" in result.stdout
    names = re.findall(r"^  (demo\d@127\.0\.0\.1:\d+) \(pid (\d+)\)$", result.stdout, re.M)
    assert len(names) == 4
    for name, _ in names:
        others = sorted(other for other, _ in names if other != name)
        assert f"  {name} sees {', '.join(others)}" in result.stdout
    # The Counter walk-through: one start, one refusal naming AlreadyStarted, 1..4.
    first, last = names[0][0], names[-1][0]
    assert re.search(rf"on {re.escape(first)}: spawn\('counter', Counter\) -> <", result.stdout)
    assert f"on {last}: spawn('counter', Counter) -> AlreadyStarted:" in result.stdout
    for i, (name, _) in enumerate(names, start=1):
        assert f"on {name}: call('counter', 'increment') -> {i}" in result.stdout
    assert f"on {last}: call('counter', 'value') -> 4" in result.stdout
    # Every node process it started is gone.
    for _, pid in names:
        assert not Path(f"/proc/{pid}").exists()


def test_demo_rejects_a_bad_node_count() -> None:
    result = run_cli("demo", "--nodes", "0")
    assert result.returncode == 2
    assert "expected a number of nodes from 1 to 20" in result.stderr


@pytest.mark.parametrize(
    "example", sorted(Path(__file__).parent.parent.joinpath("examples").glob("*.yaml"))
)
def test_shipped_example_configs_are_valid(example: Path) -> None:
    result = run_cli("check", str(example), env={"PYCLUSTER_COOKIE": "an-example-cookie-0123"})
    assert result.returncode == 0, result.stderr


def write_config(tmp_path: Path, name: str, extra: str = "") -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(f"node:\n  name: {name}\n  http: {{port: 9201}}\n{extra}")
    return path


async def test_run_status_and_graceful_stop(tmp_path: Path) -> None:
    name = "solo@127.0.1.20"
    config = write_config(tmp_path, name)
    cookie_file = tmp_path / "cookie"
    cookie_file.write_text("  s3cret-cookie-for-tests\n")  # whitespace is no part of it
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "pycluster", "run", str(config)),
        *("--cookie-file", str(cookie_file), "--log-format", "json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )

    async def status(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(run_cli, "status", "--node", name, *args)

    right = ("--cookie", "s3cret-cookie-for-tests")
    try:
        answered = None

        async def answers() -> bool:
            nonlocal answered
            answered = await status(*right, "--json")
            return answered.returncode == 0

        await until(answers, timeout=20, interval=0.05, what=f"{name} answers")
        assert answered is not None
        view = json.loads(answered.stdout)
        assert view == {
            "node": name,
            "nodes": [],
            "topologies": {},
            "registry": {"backend": "crdt", "names": 0, "synced": True},
        }
        async with (
            aiohttp.ClientSession() as session,
            session.get("http://127.0.1.20:9201/status") as response,
        ):
            assert await response.json() == view
        wrong = await status("--cookie", "wrong-cookie-for-tests")
        assert wrong.returncode == 1
        assert "cookie mismatch" in wrong.stderr
        assert "s3cret" not in wrong.stderr
        human = await status(*right)
        assert human.stdout.splitlines() == [
            f"{name} sees 0 node(s)",
            "registry: crdt, 0 name(s), synced",
        ]
    finally:
        process.send_signal(signal.SIGTERM)
        written, _ = await asyncio.wait_for(process.communicate(), 20)
    output = written.decode()
    assert process.returncode == 0, output
    (leaving,) = [r for r in parse_records(output) if r.get("event") == "leaving"]
    assert (leaving["logger"], leaving["level"], leaving["node"]) == ("pycluster.cli", "INFO", name)
    assert "s3cret" not in output


def test_run_without_a_cookie_exits_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, "solo@127.0.1.21")
    result = run_cli("run", str(config), without=("PYCLUSTER_COOKIE",))
    assert result.returncode == 2
    assert "node.cookie: a cookie is required" in result.stderr


def test_run_on_an_address_in_use_exits_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.1.22", 9100))
        taken.listen()
        config = write_config(tmp_path, "solo@127.0.1.22")
        result = run_cli("run", str(config), "--cookie", "c" * 16)
    assert result.returncode == 1
    assert "cannot listen as solo@127.0.1.22" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["run", "status"])
def test_a_short_cookie_is_refused_from_every_source(tmp_path: Path, command: str) -> None:
    config = write_config(tmp_path, "solo@127.0.1.23")
    short_file = tmp_path / "short"
    short_file.write_text("  fifteen-chars!!\n")  # 16 with its padding, 15 without
    target = [str(config)] if command == "run" else ["--node", "solo@127.0.1.23"]
    for flags, extra_env, source in (
        (["--cookie", "short"], {}, "--cookie"),
        (["--cookie-file", str(short_file)], {}, "--cookie-file"),
        ([], {"PYCLUSTER_COOKIE": " a "}, "PYCLUSTER_COOKIE"),
    ):
        result = run_cli(command, *target, *flags, env=extra_env, without=("PYCLUSTER_COOKIE",))
        assert result.returncode == 2, (source, result.stderr)
        assert f"{source}: the cookie has" in result.stderr
        assert "fewer than 16" in result.stderr
        assert "Traceback" not in result.stderr
        assert "fifteen" not in result.stderr


def test_check_reports_a_short_cookie_at_its_path(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    for cookie in ("xyzzy", "[a-long-enough-cookie, qwq]", "'               '"):
        config.write_text(f"node:\n  name: solo@127.0.1.24\n  cookie: {cookie}\n")
        result = run_cli("check", str(config))
        assert result.returncode == 2, cookie
        assert "node.cookie: expected a cookie of at least 16 characters" in result.stderr
        assert "qwq" not in result.stderr
        assert "xyzzy" not in result.stderr
    config.write_text(
        "node:\n  name: solo@127.0.1.24\n  cookie: [new-cookie-0123456, old-cookie-0123456]\n"
    )
    assert run_cli("check", str(config)).returncode == 0


def test_check_and_run_refuse_the_kubernetes_strategy_without_its_extra(tmp_path: Path) -> None:
    # The `kubernetes` package made unimportable in the command's process, as when the
    # extra is not installed: a sitecustomize on PYTHONPATH hides it from the import system.
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'kubernetes' or name.startswith('kubernetes.'):\n"
        "            raise ModuleNotFoundError(name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Hide())\n"
    )
    config = tmp_path / "node.yaml"
    config.write_text(
        "node: {name: app@127.0.0.2, cookie: check-extra-cookie-012345}\n"
        "topologies: {k8s: {strategy: kubernetes, config: {selector: app=x, node_basename: app}}}\n"
    )
    env = {"PYTHONPATH": f"{hide}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    problem = (
        "topologies.k8s.strategy: strategy 'kubernetes' needs the Python package "
        "'kubernetes', which is not installed: pip install 'pycluster[kubernetes]'"
    )
    for command in ("check", "run"):
        result = run_cli(command, str(config), env=env)
        assert result.returncode == 2, (command, result.stderr)
        assert problem in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr
    assert run_cli("check", str(config)).returncode == 0  # with the extra, as installed here


@pytest.mark.parametrize(
    ("address", "before", "after", "levels"),
    [
        # After the command, as -v: nothing below WARNING, not even "listening".
        ("127.0.1.23", (), ("--log-level", "warning"), set()),
        # Before it: every library's debug records, not only pycluster's.
        ("127.0.1.24", ("--log-level", "debug"), (), {"DEBUG", "INFO"}),
    ],
    ids=["warning-after", "debug-before"],
)
async def test_log_level_sets_the_least_severe_level_logged(
    tmp_path: Path, address: str, before: tuple[str, ...], after: tuple[str, ...], levels: set[str]
) -> None:
    config = write_config(tmp_path, f"solo@{address}")
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "pycluster", *before, "run", str(config), *after),
        *("--cookie", "log-level-cookie-0123456", "--log-format", "json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        async def ready() -> bool:
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://{address}:9201/readyz") as response,
                ):
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await until(ready, timeout=20, interval=0.05, what=f"{address} is ready")
    finally:
        process.send_signal(signal.SIGTERM)
        written, _ = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, written
    records = parse_records(written.decode())
    below_warning = {r["level"] for r in records} & {"DEBUG", "INFO"}
    assert below_warning == levels, records
    if "DEBUG" in levels:
        assert "asyncio" in {r["logger"] for r in records if r["level"] == "DEBUG"}
