"""``pycluster remote``: an asyncio REPL on a running cluster, driven through a
pseudo-terminal as a person would type into it (issue 15)."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cluster.test_app import declare, readyz, write_service
from tests.lab import Lab

WITHIN = 20.0


class Terminal:
    """A process on a pseudo-terminal: type into it, read until a pattern shows."""

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, close_fds=True
        )
        os.close(slave)
        self.seen = ""

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def expect(self, pattern: str, timeout: float = WITHIN) -> re.Match[str]:
        """Wait (bounded) until the output after what earlier calls consumed matches."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.seen)
            if found:
                self.seen = self.seen[found.end() :]
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not seen within {timeout} s in {self.seen!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the process ended and closed the terminal
                    chunk = b""
                if not chunk and self.process.poll() is not None:
                    raise AssertionError(f"exited before {pattern!r}: {self.seen!r}")
                self.seen += chunk.decode(errors="replace").replace("\r\n", "\n")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        os.close(self.master)


async def test_remote_calls_the_counter_and_lists_the_nodes(lab: Lab, tmp_path: Path) -> None:
    app_dir, _ = write_service(tmp_path)
    names = [f"r{i}@{lab.address()}" for i in range(2)]
    nodes = [declare(lab, names, i, app_dir, "counter_service:service") for i in range(2)]
    await lab.start(nodes)

    async def ready() -> bool:
        return [await asyncio.to_thread(readyz, n) for n in nodes] == [200, 200]

    await lab.until(ready, timeout=WITHIN, what="both nodes run the counter service")
    terminal = Terminal(
        *(sys.executable, "-m", "pycluster", "remote", "--node", names[1]),
        f"--cookie={lab.cookie}",  # a cookie may start with "-"
    )
    try:
        terminal.expect(r">>> ")
        terminal.type('await call("counter", "increment")')
        terminal.expect(r"\n1\n>>> ")
        terminal.type('await call("counter", "increment")')
        terminal.expect(r"\n2\n>>> ")
        terminal.type("sorted(await nodes())")
        listed = terminal.expect(r"\n(\[.*\])\n>>> ")
        assert eval(listed.group(1)) == sorted(names)  # a list of strings, printed by repr
        terminal.type('(await whereis("counter")).node in await nodes()')
        terminal.expect(r"\nTrue\n>>> ")
        terminal.type('await call("nobody", 1)')
        terminal.expect(r"NotRegistered|RemoteError")
        terminal.expect(r">>> ")  # an error is printed, and the prompt comes back
        # Ctrl-C cancels the statement running, and the prompt comes back.
        terminal.type('print("sleeping"); await asyncio.sleep(60)')
        terminal.expect(r"\nsleeping\n")
        terminal.process.send_signal(signal.SIGINT)
        terminal.expect(r"KeyboardInterrupt\n>>> ")
        terminal.type("1 + 1")
        terminal.expect(r"\n2\n>>> ")
        os.write(terminal.master, b"\x04")  # Ctrl-D leaves
        assert await asyncio.to_thread(terminal.process.wait, WITHIN) == 0
    finally:
        terminal.close()
    # Nothing ran on the nodes but the requests: the counter holds the two increments.
    for node in nodes:
        assert (await lab.status(node))["registry"]["names"] == 1
