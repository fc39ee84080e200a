"""``pycluster check`` on config files built to exhaust it: a real process refuses each one
at once with exit 2 and the problem, in bounded memory, never with a traceback."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli

SECONDS = 10  # generous for a loaded CI machine: each takes well under a second
MEMORY = 2**30  # address space; the billion laughs took 1.2 GB of memory before the limits

BILLION_LAUGHS = """\
l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]
l1: &l1 [*l0, *l0, *l0, *l0, *l0, *l0, *l0, *l0, *l0]
l2: &l2 [*l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1]
l3: &l3 [*l2, *l2, *l2, *l2, *l2, *l2, *l2, *l2, *l2]
l4: &l4 [*l3, *l3, *l3, *l3, *l3, *l3, *l3, *l3, *l3]
l5: &l5 [*l4, *l4, *l4, *l4, *l4, *l4, *l4, *l4, *l4]
l6: &l6 [*l5, *l5, *l5, *l5, *l5, *l5, *l5, *l5, *l5]
l7: &l7 [*l6, *l6, *l6, *l6, *l6, *l6, *l6, *l6, *l6]
"""

NODE = "node: {name: app@127.0.0.2}\n"
BOMBS = {
    "billion-laughs": (
        BILLION_LAUGHS,
        "line 5, column 10: more than 10,000 values once aliases are expanded",
    ),
    "2-mib": (
        NODE + "# " + "x" * (2 * 2**20 - len(NODE) - 3) + "\n",
        f"config file is {2 * 2**20} bytes; the limit is 1 MiB",
    ),
    "deep-nesting": (
        "node: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "line 1, column 106: more than 100 levels of nesting",
    ),
    "nested-default": (
        NODE + "topologies:\n"
        "  files: {strategy: hosts_file, config: {path: '/etc/${A:-${B}}/hosts'}}\n",
        "topologies.files.config.path: nested ${...} in a default is not supported",
    ),
}


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


@pytest.mark.parametrize("bomb", BOMBS)
def test_check_refuses_the_bomb_at_once(tmp_path: Path, bomb: str) -> None:
    text, problem = BOMBS[bomb]
    path = tmp_path / f"{bomb}.yaml"
    path.write_text(text)
    started = time.monotonic()
    result = run_cli(
        "check", str(path), without=("A", "B"), timeout=SECONDS, preexec_fn=_limit_memory
    )
    assert time.monotonic() - started < SECONDS
    assert "Traceback" not in result.stderr
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"pycluster: {path}: 1 problem in the config",
        f"  {problem}",
    ]
