"""The runnable examples keep working."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def get_json(url: str, deadline: float) -> dict[str, object]:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                data: dict[str, object] = json.load(response)
                return data
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # the server is starting: poll until the deadline


def test_two_embedded_nodes_form_a_cluster_and_call_each_other() -> None:
    env = {**os.environ, "PYCLUSTER_COOKIE": "example-cookie-0123456789"}
    names = ["web1@127.0.1.30", "web2@127.0.1.31"]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLES / "embedded.py"),
                "--name",
                me,
                "--peers",
                peer,
                "--http-port",
                "8181",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for me, peer in (names, names[::-1])
    ]
    try:
        deadline = time.monotonic() + 30
        view = get_json("http://127.0.1.30:8181/cluster", deadline)
        while view["nodes"] != [names[1]] and time.monotonic() < deadline:
            time.sleep(0.05)
            view = get_json("http://127.0.1.30:8181/cluster", deadline)
        assert view == {
            "node": names[0],
            "nodes": [names[1]],
            "hello": {names[1]: f"hello {names[0]}, I am {names[1]}"},
        }
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
        outputs = [process.communicate(timeout=20)[0] for process in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs


def test_the_counter_walkthrough() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "counter" / "walkthrough.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[2].startswith("c@127.0.0.4: spawn('counter') -> AlreadyStarted, running as <a@")
    assert lines[3:] == [
        "a@127.0.0.2: call('counter', 'increment') -> 1",
        "b@127.0.0.3: call('counter', 'increment') -> 2",
        "c@127.0.0.4: call('counter', 'increment') -> 3",
        "b@127.0.0.3: call('counter', 'value') -> 3",
    ]
