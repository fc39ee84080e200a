"""docs/getting-started.md, run as a newcomer would: its sample of ``pycluster demo`` is
what the demo prints, and its Counter on three nodes runs command by command as written
(issue 14, part 8). The commands and their outputs are read from the page itself."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "getting-started.md"
BIN = Path(sys.executable).parent
COOKIE = "getting-started-cookie-0123456789"
WITHIN = 30.0

VARYING = [
    (re.compile(r"<[^<>\s]+>"), "<REF>"),  # an actor ref: its node's incarnation is random
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:PORT"),
    (re.compile(r"\(pid \d+\)"), "(pid PID)"),
    (re.compile(r"in \d+\.\d+ s"), "in T s"),
]


def normalized(lines: list[str], varying: list[tuple[re.Pattern[str], str]]) -> list[str]:
    out = []
    for line in lines:
        for pattern, replacement in varying:
            line = pattern.sub(replacement, line)
        out.append(line)
    return out


def section(title: str) -> str:
    text = PAGE.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def blocks(text: str, kind: str) -> list[list[str]]:
    """The lines of each fenced block of ``kind`` in ``text``."""
    return [b.splitlines() for b in re.findall(rf"```{kind}\n(.*?)```", text, re.S)]


def commands(lines: list[str]) -> list[tuple[str, list[str]]]:
    """A console block's commands, each with the output lines printed after it."""
    found: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("$ "):
            found.append((line[2:], []))
        else:
            found[-1][1].append(line)
    return found


def argv(command: str) -> list[str]:
    words = shlex.split(command)
    if words[0].startswith(".venv/bin/"):
        words[0] = str(BIN / words[0].removeprefix(".venv/bin/"))
    return words


def test_the_demo_sample_is_what_the_demo_prints() -> None:
    (sample,) = blocks(section("Install and run the demo"), "text")
    result = subprocess.run(
        [str(BIN / "pycluster"), "demo"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()
    assert normalized(printed, VARYING) == normalized(sample, VARYING)


def test_the_counter_on_three_nodes_runs_as_written(tmp_path: Path) -> None:
    install, start, ask = (commands(b) for b in blocks(section("Your own service"), "console"))
    assert [c for c, _ in install] == [
        ".venv/bin/pip install -e examples/counter",  # .ci/setup installs it so
        "export PYCLUSTER_COOKIE=$(openssl rand -base64 32)",
    ]
    env = {**os.environ, "PYCLUSTER_COOKIE": COOKIE, "XDG_RUNTIME_DIR": str(tmp_path)}
    logs = [(tmp_path / f"node{i}.log").open("wb") for i in range(len(start))]
    nodes = [
        subprocess.Popen(argv(command), cwd=ROOT, env=env, stdout=log, stderr=log)
        for (command, _), log in zip(start, logs, strict=True)
    ]
    refs = [(re.compile(r"<[^<>\s]+>"), "<REF>")]
    try:
        first, expected_status = ask[0]
        deadline = time.monotonic() + WITHIN
        while True:  # until the cluster has formed and the Counter is known everywhere
            status = subprocess.run(argv(first), capture_output=True, text=True, env=env)
            if status.stdout.splitlines() == expected_status:
                break
            assert time.monotonic() < deadline, (status.stdout, status.stderr)
            time.sleep(0.1)
        for command, expected in ask[1:]:
            result = subprocess.run(argv(command), capture_output=True, text=True, env=env)
            assert result.returncode == (3 if " spawn " in command else 0), result.stderr
            assert normalized(result.stdout.splitlines(), refs) == normalized(expected, refs)
        # Ctrl-C in a node's terminal: it leaves, and the others see it go at once.
        nodes[0].send_signal(signal.SIGINT)
        assert nodes[0].wait(WITHIN) == 0
        second = argv("pycluster status --node counter2@127.0.0.1:9102")
        second[0] = str(BIN / "pycluster")
        deadline = time.monotonic() + 5.0
        while "sees 1 node(s)" not in (
            seen := subprocess.run(second, capture_output=True, text=True, env=env).stdout
        ):
            assert time.monotonic() < deadline, seen
            time.sleep(0.05)
    finally:
        for node in nodes:
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
        for node in nodes:
            try:
                node.wait(WITHIN)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
        for log in logs:
            log.close()
