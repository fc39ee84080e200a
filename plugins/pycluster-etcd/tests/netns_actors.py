"""The actor the partition test registers: it writes down when it lives.

Node processes import it (the test puts this directory on their PYTHONPATH). Each actor
appends ``start``/``stop`` lines with ``time.monotonic()`` (one clock for every process of
the machine, whatever its network namespace) to ``RECORDS/<node>.log``, so the test can
check that no name ever has two live actors at once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pycluster.actors import Actor


def record(records: str, node: str, line: str) -> None:
    """Append one line atomically (O_APPEND, one write)."""
    path = Path(records) / f"{node.split('@')[0]}.log"
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, (line + "\n").encode())
    finally:
        os.close(descriptor)


class Sentinel(Actor):
    """Lives from its construction (right after its name was claimed) to ``stopped``."""

    def __init__(self, records: str, name: str, node: str) -> None:
        self.records = records
        self.registered_as = name
        self.where = node
        record(records, node, f"start {name} {node} {time.monotonic():.6f}")

    async def stopped(self, reason: str) -> None:
        now = time.monotonic()
        record(
            self.records, self.where, f"stop {self.registered_as} {self.where} {now:.6f} {reason}"
        )

    async def handle_call(self, message: Any) -> Any:
        return self.node.name
