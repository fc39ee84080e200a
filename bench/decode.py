"""How long decoding one frame blocks the event loop, at the default ``max_frame_size``.

A node decodes about 64 KiB per event-loop turn (a link's ``DECODE_BUDGET``), a large
frame a slice at a time as its bytes arrive, with the cyclic garbage collector held off
during each slice (as the link does). This measures the longest single decode call for
frames of 16 MiB (the default cap) of the shapes that cost most per byte, next to the
baseline: the same frame decoded whole with ``msgpack.unpackb``, which is what one event-
loop turn cost before. Reads arrive 256 KiB at a time (asyncio's largest read).

Goal (from the hardening issue): no decode call over 10 ms.
"""

from __future__ import annotations

import argparse
import gc
import struct
import time
from collections.abc import Callable

import msgpack
from lab import goal, machine, median, percentile, table

from pycluster.transport.frames import FrameDecoder, FrameLimits
from pycluster.transport.link import DECODE_BUDGET

MAX_FRAME = 16 * 1024 * 1024
READ = 256 * 1024
ITEMS = MAX_FRAME // 16  # the authenticated limit on entries per array or map


def shapes() -> dict[str, Callable[[], object]]:
    """Frame bodies of about 16 MiB within the authenticated limits."""
    rows = MAX_FRAME // ITEMS - 1
    return {
        "empty arrays (1 byte each)": lambda: [[[]] * (ITEMS - 1) for _ in range(rows)],
        "empty maps (1 byte each)": lambda: [[{}] * (ITEMS - 1) for _ in range(rows)],
        "small ints (1 byte each)": lambda: [[7] * (ITEMS - 1) for _ in range(rows)],
        "short strings (9 bytes each)": lambda: [["abcdefgh"] * (ITEMS // 9) for _ in range(rows)],
        "one 16 MiB binary": lambda: b"x" * (MAX_FRAME - 64),
        "registry-like entries": lambda: [
            [f"name-{i}", "app@10.0.0.5", f"{i:032x}", i] for i in range(MAX_FRAME // 72)
        ],
    }


def sliced(stream: bytes) -> tuple[list[float], int, float]:
    """Durations of every decode call over ``stream``, fed in reads; messages decoded; and
    how long freeing the decoded message took (a handler dropping it pays that)."""
    decoder = FrameDecoder(FrameLimits.authenticated(MAX_FRAME))
    durations: list[float] = []
    decoded: list[dict[str, object]] = []
    for start in range(0, len(stream), READ):
        decoder.feed(stream[start : start + READ])
        while True:
            collecting = gc.isenabled()
            gc.disable()
            began = time.perf_counter()
            try:
                decoded += decoder.decode(DECODE_BUDGET)
            finally:
                durations.append(time.perf_counter() - began)
                if collecting:
                    gc.enable()
            if not decoder.ready:
                break
    count = len(decoded)
    began = time.perf_counter()
    del decoded
    return durations, count, time.perf_counter() - began


def whole(payload: bytes) -> float:
    """The baseline: the frame decoded in one call (what one loop turn cost before)."""
    began = time.perf_counter()
    value = msgpack.unpackb(payload)
    elapsed = time.perf_counter() - began
    del value
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="frames decoded per shape")
    args = parser.parse_args()
    rows, worst_all = [], 0.0
    for label, build in shapes().items():
        payload = msgpack.packb({"t": "msg", "to": "x", "body": build()})
        assert len(payload) <= MAX_FRAME, (label, len(payload))
        stream = struct.pack(">I", len(payload)) + payload
        calls: list[float] = []
        baseline: list[float] = []
        freeing: list[float] = []
        for _ in range(args.runs):
            durations, messages, freed = sliced(stream)
            assert messages == 1
            calls += durations
            freeing.append(freed)
            baseline.append(whole(payload))
        worst = max(calls)
        worst_all = max(worst_all, worst)
        rows.append(
            [
                label,
                f"{len(payload) / 2**20:.1f} MiB",
                len(calls) // args.runs,
                f"{median(calls) * 1000:.2f} ms",
                f"{percentile(calls, 0.99) * 1000:.2f} ms",
                f"{worst * 1000:.2f} ms",
                f"{median(baseline) * 1000:.0f} ms",
                f"{median(baseline) / worst:.0f}x",
                f"{median(freeing) * 1000:.0f} ms",
            ]
        )
    print(f"machine: {machine()}")
    print()
    print(
        table(
            [
                "frame of",
                "size",
                "decode calls",
                "call median",
                "p99",
                "max (loop blocked)",
                "baseline: whole frame at once",
                "baseline / max",
                "freeing the message",
            ],
            rows,
        )
    )
    print()
    print(goal("no decode call over 10 ms", worst_all < 0.010))


if __name__ == "__main__":
    main()
