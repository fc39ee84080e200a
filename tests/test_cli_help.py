"""The ``pycluster`` command helps (issue 14): a version, -v anywhere, quiet on a closed
pipe, a one-node demo, and a clear word when ``status`` is pointed at the HTTP port.

Nodes here listen on 127.0.41.x only.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import pycluster
from pycluster import Node, load_config
from tests.conftest import run_cli
from tests.lab.polling import until

COOKIE = ("--cookie", "cli-help-cookie-0123456")


def test_version_prints_the_version_and_exits_0() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"pycluster {pycluster.__version__}\n"


@pytest.mark.parametrize(
    "words", [("-v", "status"), ("status", "-v"), ("status", "--verbose")], ids=" ".join
)
def test_verbose_is_accepted_before_and_after_the_command(words: tuple[str, ...]) -> None:
    # Nothing listens there: the connection is refused at once, and -v shows the debug
    # record of that refusal.
    result = run_cli(*words, "--node", "nobody@127.0.41.1", *COOKIE, "--timeout", "2")
    assert result.returncode == 1, result.stderr
    assert "cannot get the status of nobody@127.0.41.1" in result.stderr
    assert re.search(r"^\S+ \S+ DEBUG pycluster\.", result.stderr, re.M), result.stderr


def test_check_takes_verbose_after_the_command(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("node: {name: app@127.0.41.6}\n")
    plain = run_cli("check", str(config))
    for words in (("check", "-v", str(config)), ("check", str(config), "-v")):
        result = run_cli(*words)
        assert (result.returncode, result.stdout) == (0, plain.stdout), words
    assert plain.stdout.startswith(f"{config}: ok: node app@127.0.41.6")


def test_without_verbose_there_is_no_debug_record() -> None:
    result = run_cli("status", "--node", "nobody@127.0.41.1", *COOKIE, "--timeout", "2")
    assert result.returncode == 1
    assert " DEBUG " not in result.stderr


def _with_closed_stdout(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with stdout a pipe nobody reads any more (``... | head -0``)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before the command starts: every write to it fails
    try:
        return subprocess.run(
            [sys.executable, "-m", "pycluster", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            timeout=60,
        )
    finally:
        os.close(write_end)


# 1 when our own output cannot be written, as the Python docs' note on SIGPIPE suggests
# (not a shell's 141: Python ignores the signal); argparse's help ignores write errors
# itself and exits 0. The status of a running node is below, with the node.
@pytest.mark.parametrize(
    ("args", "code"), [(("check", "CONFIG"), 1), (("--help",), 0), (("status", "--help"), 0)]
)
def test_a_closed_pipe_ends_the_command_quietly(
    tmp_path: Path, args: tuple[str, ...], code: int
) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("node: {name: app@127.0.41.2}\n")
    result = _with_closed_stdout(*(str(config) if a == "CONFIG" else a for a in args))
    assert result.returncode == code
    assert result.stderr == ""


def test_demo_runs_a_single_node() -> None:
    result = run_cli("demo", "--nodes", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    ((name, pid),) = re.findall(r"^  (demo1@127\.0\.0\.1:\d+) \(pid (\d+)\)$", result.stdout, re.M)
    assert f"  {name} sees (alone)" in result.stdout
    assert f"on {name}: spawn('counter', Counter) -> AlreadyStarted:" in result.stdout
    assert f"on {name}: call('counter', 'increment') -> 1" in result.stdout
    assert f"on {name}: call('counter', 'value') -> 1" in result.stdout
    assert not Path(f"/proc/{pid}").exists()


async def test_status_at_the_http_port_says_so_and_a_closed_pipe_is_quiet(
    tmp_path: Path,
) -> None:
    name = "solo@127.0.41.20"
    config = tmp_path / "node.yaml"
    config.write_text(f"node:\n  name: {name}\n  http: {{port: 9201}}\n")
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "pycluster", "run", str(config), *COOKIE),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    async def status(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(run_cli, "status", *args, *COOKIE)

    try:

        async def answers() -> bool:
            return (await status("--node", name)).returncode == 0

        await until(answers, timeout=20, interval=0.05, what=f"{name} answers")
        for output in ((), ("--json",)):
            closed = await asyncio.to_thread(
                _with_closed_stdout, "status", "--node", name, *output, *COOKIE
            )
            assert (closed.returncode, closed.stderr) == (1, ""), output
        for target in (("--node", f"{name}:9201"), ("--node", name, "--port", "9201")):
            result = await status(*target)
            assert result.returncode == 1, target
            last = result.stderr.splitlines()[-1]
            assert last == (
                f"pycluster: cannot get the status of {target[1]}: 127.0.41.20:9201 answers "
                "HTTP: that is a node's HTTP port (node.http), not its cluster port "
                "(node.port, default 9100)"
            )
        # Told apart in the handshake itself: counted as an HTTP answer, not as a
        # malformed frame (whose warning would be about a frame of 1213486160 bytes).
        client = Node(
            load_config({"node": {"name": "probe@127.0.41.21"}}, env={}),
            cookie=COOKIE[1],
            hidden=True,
        )
        async with client:
            failure = await client.transport.dial(f"{name}:9201")
        assert failure is not None
        assert failure.reason == "http", failure
        registry = client.metrics.registry
        kinds = {
            kind: registry.get_sample_value("pycluster_handshake_failures_total", {"kind": kind})
            for kind in ("http", "malformed")
        }
        assert kinds == {"http": 1.0, "malformed": None}
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 20)
    assert process.returncode == 0


def test_check_json_on_a_valid_config_says_ok_and_exits_0(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("node: {name: app@127.0.41.3}\n")
    result = run_cli("check", "--json", str(config))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"config": str(config), "ok": True, "problems": []}


def test_check_json_lists_every_problem_at_its_path_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("node:\n  name: app\n  port: 0\ntopologies:\n  k8s: {strategy: consul}\n")
    result = run_cli("check", str(config), "--json")
    assert result.returncode == 2
    assert result.stderr == ""
    answer = json.loads(result.stdout)
    assert (answer["config"], answer["ok"]) == (str(config), False)
    assert [p["path"] for p in answer["problems"]] == [
        "node.name",
        "node.port",
        "topologies.k8s.strategy",
    ]
    assert answer["problems"][1]["message"] == "expected a port number from 1 to 65535, got 0"


def test_check_json_on_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = run_cli("check", "--json", str(tmp_path / "nowhere.yaml"))
    assert result.returncode == 2
    assert json.loads(result.stdout)["problems"] == [{"path": "", "message": "no such file"}]


def test_check_suggests_the_strategy_a_typo_meant(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(
        "node: {name: app@127.0.41.5}\ntopologies:\n  k8s: {strategy: kubernetes.dsn}\n"
    )
    result = run_cli("check", str(config))
    assert result.returncode == 2
    (problem,) = result.stderr.splitlines()[1:]
    assert problem.startswith("  topologies.k8s.strategy: unknown strategy 'kubernetes.dsn' (")
    assert problem.endswith("); did you mean 'kubernetes.dns'?")
