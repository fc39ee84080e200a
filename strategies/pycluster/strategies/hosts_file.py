"""``hosts_file``: nodes listed in a file (like Erlang's ``.hosts.erlang``), re-read each poll."""

from __future__ import annotations

import asyncio
from pathlib import Path

import attrs

from pycluster import (
    NodeNameError,
    PollSchedule,
    Strategy,
    Topology,
    checks,
    parse_node_name,
    poll,
    setting,
)


@attrs.frozen(kw_only=True)
class HostsFileConfig:
    """Config of the ``hosts_file`` strategy."""

    path: str = setting(doc="File listing node names, one per line.", check=checks.non_empty)
    polling_interval: float = setting(
        default=5000,
        doc="How often the file is re-read.",
        unit="ms",
        check=checks.positive_duration,
    )


def parse_hosts(text: str) -> tuple[list[str], list[str]]:
    """Node names in a hosts file, and a description of each bad line."""
    names: list[str] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if entry.startswith("'") and entry.endswith("'."):
            entry = entry[1:-2]
        if not entry:
            continue
        try:
            names.append(str(parse_node_name(entry)))
        except NodeNameError as exc:
            problems.append(f"line {number}: {entry!r} is not a node name ({exc})")
    return names, problems


class HostsFile(Strategy):
    """Connects the nodes a file lists, re-reading it every ``polling_interval``.

    One node name per line; blank lines and ``#`` comments are ignored, and Erlang-style
    quoted lines (``'app@10.0.0.1'.``) are accepted. A file that cannot be read, or lists no
    valid node, changes nothing (it is usually being rewritten); bad lines are reported and
    skipped, and counted (``pycluster_discovery_dropped_total``, reason ``bad_line``) each
    time the file is read. A node removed from the file is disconnected and kept out until
    listed again.
    Replace the file atomically (write a new one, then rename it over the old).
    """

    name = "hosts_file"
    Config = HostsFileConfig

    async def run(self, topology: Topology) -> None:
        config: HostsFileConfig = topology.config
        path = Path(config.path)

        async def attempt() -> bool:
            answer: list[str] | None = None
            try:
                text = await asyncio.to_thread(path.read_text, encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                topology.problem(
                    f"cannot read {path} ({reason}); keeping current nodes", reason="unreadable"
                )
            else:
                answer, problems = parse_hosts(text)
                for _ in problems:
                    topology.dropped("bad_line")
                if problems:
                    topology.problem(
                        f"{path}: skipped bad lines: " + "; ".join(problems), reason="bad_lines"
                    )
                elif not answer:
                    topology.problem(
                        f"{path} lists no nodes; keeping current nodes", reason="empty"
                    )
                else:
                    topology.problem(None)
            await topology.apply(answer)
            # Every read counts as a success: reading sooner would not make whoever
            # rewrites the file do it sooner.
            return True

        await poll(topology, attempt, PollSchedule(config.polling_interval / 1000))
