"""The one rule for repeated warnings (node handshakes, HTTP, gossip drops, accept errors)."""

from __future__ import annotations

import logging
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycluster.throttle import Throttle


def test_a_key_is_admitted_once_per_interval_with_its_repeats_counted() -> None:
    throttle = Throttle(60, burst=2)
    assert throttle.admit("10.0.0.1", 0) == 0
    assert throttle.admit("10.0.0.1", 1) is None
    assert throttle.admit("10.0.0.1", 2) is None
    assert throttle.admit("10.0.0.2", 1) == 0
    assert throttle.admit("10.0.0.3", 2) is None  # over the burst of keys
    assert throttle.admit("10.0.0.1", 61) == 2  # with the two it did not log
    assert throttle.admit("10.0.0.3", 62) == 0


def test_spoofed_keys_cost_bounded_memory_and_constant_time() -> None:
    throttle = Throttle(60, burst=16, size=1024)
    began = time.perf_counter()
    for i in range(200_000):
        throttle.admit(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", i / 1000)
    assert len(throttle) <= 1024
    # 200,000 fresh keys in well under a second: no insert rebuilds anything.
    assert time.perf_counter() - began < 2.0


@given(st.lists(st.tuples(st.integers(0, 5), st.floats(0, 1)), max_size=200))
def test_at_most_burst_admissions_per_interval(events: list[tuple[int, float]]) -> None:
    throttle = Throttle(10, burst=3)
    now = 0.0
    admitted: list[float] = []
    for key, step in events:
        now += step
        if throttle.admit(key, now) is not None:
            admitted.append(now)
    for i, at in enumerate(admitted):
        assert len([t for t in admitted[i:] if t - at < 10]) <= 3 * 2  # two windows at most


def test_warn_logs_an_admitted_key_with_its_repeats_and_the_rest_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "t")
    logger = logging.getLogger("t")
    throttle = Throttle(60)
    for _ in range(3):
        throttle.warn(
            logger, "k", "trouble from %s", "x", quiet=logging.DEBUG, extra={"event": "trouble"}
        )
    throttle.warn(logger, "other", "silent %s", "y")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "trouble from x"),
        (logging.DEBUG, "trouble from x"),
        (logging.DEBUG, "trouble from x"),
        (logging.WARNING, "silent y"),
    ]
    # The event fields reach every record; an admitted one also says how many it stands for.
    assert [getattr(r, "event", None) for r in caplog.records] == ["trouble"] * 3 + [None]
    assert [getattr(r, "repeats", None) for r in caplog.records] == [0, None, None, 0]
    caplog.clear()
    quiet = Throttle(60)
    quiet.warn(logger, "k", "once")
    quiet.warn(logger, "k", "once")  # not logged at all without a quiet level
    assert len(caplog.records) == 1
