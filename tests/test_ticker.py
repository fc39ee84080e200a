"""The ticker's patience: how late a node's own loop ran, remembered for a while."""

from __future__ import annotations

import time

import pytest

from pycluster.transport import ticker as ticker_module
from pycluster.transport.ticker import Ticker
from tests.lab.polling import until


class Wakes:
    """A connection that wants the ticker every 20 ms, and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def tick(self, now: float, early: float) -> float:
        self.calls += 1
        return now + 0.02


async def test_a_ticker_allows_twice_its_own_delay_then_forgets_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ticker_module, "PATIENCE_MEMORY", 1.0)
    ticker, connection = Ticker(early=0.001), Wakes()
    ticker.add(connection, time.monotonic() + 0.02)
    await until(lambda: connection.calls >= 5, timeout=5, what="five wake-ups")
    assert ticker.patience < 0.5  # on time, give or take a busy machine
    time.sleep(0.5)  # noqa: ASYNC251 - the loop held up: the fault under test
    await until(lambda: connection.calls >= 6, timeout=5, what="a late wake-up")
    assert ticker.patience >= 2 * (0.5 - 0.02)
    remembered = ticker.patience
    await until(lambda: connection.calls >= 12, timeout=5, what="on-time wake-ups")
    assert ticker.patience == remembered  # smaller delays do not replace it meanwhile
    await until(lambda: ticker.patience < 0.5, timeout=5, what="the delay forgotten")
    ticker.discard(connection)
