"""How long decoding one frame blocks the event loop, at the default ``max_frame_size``.

A link decodes in slices of 32 KiB (``DECODE_BUDGET``) until a turn has taken 2 ms
(``TURN_TIME``), a large frame a slice at a time as its bytes arrive, with the cyclic
garbage collector held off meanwhile: one event-loop turn is one ``decode_turn`` call,
which this runs exactly as a link does. It measures every turn over frames of 16 MiB (the
default cap) of the shapes that cost most per byte, next to the baseline: the same frame
decoded whole with ``msgpack.unpackb``, which is what one event-loop turn cost before.
Reads arrive 256 KiB at a time (asyncio's largest read). Freeing the decoded message is
timed on its own: the handler that drops it pays that, whatever the transport does.

Turns in which the process had to grow its heap (many minor page faults: a frame of
millions of containers needs about a gigabyte) are shown apart: what they cost beyond
decoding is the memory system's (first touches of fresh pages, slow in a virtual
machine), and is paid again whenever freed memory went back to the system.

Goal (from the hardening issue): no turn over 10 ms.
"""

from __future__ import annotations

import argparse
import resource
import struct
import time
from collections.abc import Callable

import msgpack
from lab import goal, machine, median, percentile, table

from pycluster.transport.frames import Frame, FrameDecoder, FrameLimits
from pycluster.transport.link import decode_turn

MAX_FRAME = 16 * 1024 * 1024
READ = 256 * 1024
ITEMS = MAX_FRAME // 16  # the authenticated limit on entries per array or map
GROWING = 1000
"""Page faults above which a turn counts as growing the process's heap (first touches of
fresh memory: in a virtual machine each can cost microseconds, outside the decoder)."""


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


def sliced(stream: bytes) -> tuple[list[float], list[int], int, float]:
    """Durations of every decoding turn over ``stream``, fed in reads, and the page faults
    each took; messages decoded; and how long freeing the decoded message took."""
    decoder = FrameDecoder(FrameLimits.authenticated(MAX_FRAME))
    durations: list[float] = []
    faults: list[int] = []
    decoded: list[Frame] = []
    for start in range(0, len(stream), READ):
        decoder.feed(stream[start : start + READ])
        more = True
        while more:
            faulted = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            began = time.perf_counter()
            messages, more = decode_turn(decoder)
            durations.append(time.perf_counter() - began)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faulted)
            decoded += messages
    count = len(decoded)
    began = time.perf_counter()
    del decoded
    return durations, faults, count, time.perf_counter() - began


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
        growing: list[float] = []
        baseline: list[float] = []
        freeing: list[float] = []
        turns = 0
        for _ in range(args.runs):
            durations, faults, messages, freed = sliced(stream)
            assert messages == 1
            turns = len(durations)
            for took, faulted in zip(durations, faults, strict=True):
                (growing if faulted > GROWING else calls).append(took)
            freeing.append(freed)
            baseline.append(whole(payload))
        worst = max(calls)
        worst_all = max(worst_all, worst)
        rows.append(
            [
                label,
                f"{len(payload) / 2**20:.1f} MiB",
                turns,
                f"{median(calls) * 1000:.2f} ms",
                f"{percentile(calls, 0.99) * 1000:.2f} ms",
                f"{worst * 1000:.2f} ms",
                f"{len(growing)}, max {max(growing) * 1000:.0f} ms" if growing else "none",
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
                "turns",
                "turn median",
                "p99",
                "max",
                f"turns growing the heap (> {GROWING} page faults)",
                "baseline: whole frame at once",
                "baseline / max",
                "freeing the message",
            ],
            rows,
        )
    )
    print()
    print(goal("no turn over 10 ms (turns that grow the heap apart)", worst_all < 0.010))


if __name__ == "__main__":
    main()
