"""Every benchmark still runs: each is started as its README says, at a tiny size.

The figures are not looked at (docs/performance.md holds those, measured on a quiet
machine); what is checked is that the script runs to the end and prints its table. A
benchmark that no longer runs is found here, not by the next measuring campaign (the etcd
benchmark once failed for a whole sitting unnoticed).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNS = 240.0
"""Seconds a tiny benchmark may take (most take a few)."""

BENCHMARKS = {
    "formation": ["bench/formation.py", "--sizes", "3", "--runs", "1"],
    "failure_detection": ["bench/failure_detection.py", "--timeouts", "1", "--trials", "1"],
    "rpc": [
        "bench/rpc.py",
        *("--calls", "200", "--warmup", "20", "--casts", "2000", "--rounds", "1"),
    ],
    "registry": ["bench/registry.py", "--names", "200", "--memory-names", "1000"],
    "floor": ["bench/floor.py", "--runs", "1", "--calls", "200"],
    "paths": [
        "bench/paths.py",
        *("--runs", "1", "--calls", "200", "--names", "300", "--sequential", "100"),
        *("--many", "100", "--ring", "100"),
    ],
    "idle": ["bench/idle.py", "--sizes", "0", "--window", "2", "--lag-interval", "1"],
    "scale": [
        "bench/scale.py",
        *("--sizes", "4", "--runs", "1", "--names", "400", "--batch", "100"),
        *("--victims", "1", "--idle", "1", "--storm", "1", "--storm-hold", "4"),
    ],
    "join_soak": ["bench/join_soak.py", "--sizes", "2", "--trials", "1"],
    "discovery": ["bench/discovery.py", "--nodes", "3", "--changes", "1"],
    "attack": [
        "bench/attack.py",
        *("--seconds", "1", "--connections", "20", "--http-connections", "50"),
    ],
    "decode": ["bench/decode.py", "--runs", "1"],
    "page": [
        "bench/page.py",
        *("--names", "100", "--groups", "5", "--viewers", "1", "--window", "2"),
    ],
    "takeover": ["bench/takeover.py", "--trials", "1"],
    "instructions": [
        "bench/instructions.py",
        "--count",
        "50",
        "--only",
        "local",
        "queue",
        "claimant",
    ],
    "registry_etcd": ["plugins/pycluster-etcd/bench/registry_etcd.py", "--names", "50"],
}


@pytest.mark.parametrize("command", BENCHMARKS.values(), ids=BENCHMARKS.keys())
def test_the_benchmark_runs_to_its_table(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUNS,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert any(line.startswith("|") for line in done.stdout.splitlines()), done.stdout[-2000:]
