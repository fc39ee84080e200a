"""``pycluster-counter``: start or call the Counter through a running node, as a hidden
client (the way ``pycluster status`` asks a node).

    pycluster-counter spawn --node app@10.89.77.11      # exit 0: started; 3: AlreadyStarted
    pycluster-counter increment --node app@10.89.77.12  # prints the new value
    pycluster-counter value --node app@10.89.77.13

The cookie is read from ``PYCLUSTER_COOKIE``, as the nodes read it. Exit 1 when the node
cannot be asked.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from pycluster import AlreadyStarted, Node, NotConnected, RemoteError, load_config
from pycluster_counter.counter import NAME, Counter

EXIT_ALREADY_STARTED = 3
"""``spawn`` found the Counter already running (Elixir's ``{:error, {:already_started, pid}}``)."""


async def ask(command: str, node: str, cookie: str, timeout: float) -> int:
    """Run ``command`` through ``node``; print what it returned; the exit status."""
    config = load_config({"node": {"name": f"counter-client-{os.getpid()}@localhost"}}, env={})
    async with Node(config, cookie=cookie, hidden=True, handshake_timeout=timeout) as client:
        if not await client.connect(node):
            raise NotConnected(f"could not connect to {node}")
        if command == "spawn":
            try:
                ref = await client.registry.spawn(NAME, Counter, on=node, timeout=timeout)
            except AlreadyStarted as exc:
                print(f"{node}: spawn({NAME!r}) -> AlreadyStarted, running as {exc.ref}")
                return EXIT_ALREADY_STARTED
            print(f"{node}: spawn({NAME!r}) -> started as {ref}")
            return 0
        value = await client.registry.call_via(node, NAME, command, timeout=timeout)
        print(f"{node}: call({NAME!r}, {command!r}) -> {value}")
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pycluster-counter``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="pycluster-counter",
        description="Start or call the Counter through a running node, as a hidden client.",
    )
    parser.add_argument("command", choices=["spawn", "increment", "value"])
    default_node = f"app@{os.environ['POD_IP']}" if os.environ.get("POD_IP") else None
    parser.add_argument(
        "--node",
        default=default_node,
        required=default_node is None,
        help="the node to go through (default: app@$POD_IP, this container's own)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    args = parser.parse_args(argv)
    cookie = os.environ.get("PYCLUSTER_COOKIE", "")
    if not cookie:
        parser.error("set PYCLUSTER_COOKIE to the cluster's cookie")
    try:
        return asyncio.run(ask(args.command, args.node, cookie, args.timeout))
    except (NotConnected, RemoteError, TimeoutError, OSError) as exc:
        print(f"pycluster-counter: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
