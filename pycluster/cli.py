"""The ``pycluster`` command: run a node, ask one for its status, check a config, demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pycluster import __version__, app
from pycluster.config import Config, ConfigError, ConfigIssue, checks
from pycluster.demo import run_demo
from pycluster.errors import NotConnected, RemoteError
from pycluster.logs import FORMATS, LogFormat, configure_logging
from pycluster.node import Node
from pycluster.nodename import DEFAULT_PORT
from pycluster.plugins import PluginError, load_config
from pycluster.remote import run_remote
from pycluster.status import LEAVE_MAILBOX, ask_status, ask_to_leave
from pycluster.throttle import Throttle

EXIT_CONFIG = 2
EXIT_UNREACHABLE = 1
EXIT_BROKEN_PIPE = 1
EXIT_APP_FAILED = 1
"""Exit status when whoever read the output stopped reading (``... | head -1``): 1, as
the Python docs' note on SIGPIPE does, rather than a shell's 141 for a signal we ignore."""
COOKIE_ENV = "PYCLUSTER_COOKIE"
LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
"""``--log-level``: the least severe level logged, by every library alike."""
FD_LIMIT_CEILING = 1 << 20
"""Open files asked for when the hard limit is unlimited."""
GC_FIRST_THRESHOLD = 50_000
"""Allocations between two collections of the youngest generation in ``pycluster run``
(Python's default: 700); see :func:`tune_garbage_collector`."""

log = logging.getLogger("pycluster.cli")


def _plugin_loggers() -> list[str]:
    """Top-level module names of the installed pycluster plugins (their loggers)."""
    names = {ep.module.split(".")[0] for ep in importlib.metadata.entry_points(group="pycluster")}
    return sorted(names - {"pycluster"})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pycluster`` command; returns the exit status."""
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not as a traceback at exit
    except BrokenPipeError:
        # Python flushes stdout once more at exit: point it at devnull so that cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    quiet = args.run is not _run
    level = LOG_LEVELS[args.log_level] if args.log_level else None
    if level is None:
        level = logging.WARNING if quiet else logging.INFO
    configure_logging(getattr(args, "log_format", "text"), level=level)
    if args.verbose:
        # pycluster's own details (plugins log under pycluster_*); not every library's
        # (gRPC, say, logs each request at debug).
        for name in ("pycluster", *_plugin_loggers()):
            logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        status: int = args.run(args)
    except (ConfigError, PluginError) as exc:
        print(f"pycluster: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pycluster", description="Form a cluster of Python services."
    )
    parser.add_argument("--version", action="version", version=f"pycluster {__version__}")
    _logging_arguments(parser, None)
    # The same options after the command too; SUPPRESS leaves one given before it standing.
    common = argparse.ArgumentParser(add_help=False)
    _logging_arguments(common, argparse.SUPPRESS)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, parents=[common])

    run = command("run", "run a node until SIGTERM (then leave gracefully)")
    run.add_argument("config", metavar="CONFIG", help="path of the YAML config")
    run.add_argument("--name", help="node name, overriding node.name")
    run.add_argument("--port", type=int, help="cluster port, overriding node.port")
    run.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="log lines as text (default) or as JSON objects, one a line",
    )
    run.add_argument(
        "--app",
        metavar="MODULE:ATTRIBUTE",
        help="your service, called with the started node (overrides app in CONFIG)",
    )
    _app_dir_argument(run)
    _cookie_arguments(run)
    run.set_defaults(run=_run)

    status = command("status", "ask a running node for its view")
    _target_arguments(status, "name of the node to ask", timeout=5.0)
    status.add_argument("--json", action="store_true", help="print the status JSON")
    status.set_defaults(run=_status)

    leave = command("leave", "ask a running node to leave the cluster gracefully and exit")
    _target_arguments(
        leave, "name of the node that is to leave", timeout=30.0, waits="until it has left"
    )
    leave.set_defaults(run=_leave)

    top = command("top", "the cluster as a node sees it, in the terminal, refreshed in place")
    _target_arguments(top, "name of the node to ask", timeout=5.0)
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.add_argument(
        "--once",
        action="store_true",
        help="print one frame and exit (plain text when the output is not a terminal)",
    )
    top.set_defaults(run=_top)

    remote = command("remote", "an asyncio REPL connected to a running cluster (hidden client)")
    _target_arguments(remote, "name of the node to connect through", timeout=5.0)
    remote.set_defaults(run=_remote)

    check = command("check", "validate a config file (exit 2 on problems)")
    check.add_argument("config", metavar="CONFIG", help="path of the YAML config")
    check.add_argument(
        "--json",
        action="store_true",
        help='print the result as JSON: {"config", "ok", "problems": [{"path", "message"}]}',
    )
    _app_dir_argument(check)
    check.set_defaults(run=_check)

    demo = command("demo", "start local nodes and show them form a cluster")
    demo.add_argument("--nodes", type=_node_count, default=3, help="how many nodes (1-20)")
    demo.set_defaults(run=_demo)
    return parser


def _target_arguments(
    parser: argparse.ArgumentParser, node: str, *, timeout: float, waits: str = "for it"
) -> None:
    """The options of a command that asks a running node, as a hidden client."""
    parser.add_argument("--node", required=True, help=node)
    _cookie_arguments(parser)
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"the port a --node name without one means: the cluster's node.port "
        f"(default {DEFAULT_PORT})",
    )
    parser.add_argument("--timeout", type=float, default=timeout, help=f"seconds to wait {waits}")


def _logging_arguments(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if default is None else default,
        help="log pycluster's own debug details",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=default,
        help="the least severe level logged (default: info for run, warning otherwise)",
    )


def _app_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--app-dir",
        metavar="DIR",
        default=".",
        help="directory put first on sys.path to import the app (default: the current one)",
    )


def _cookie_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--cookie", help=f"cluster cookie (visible in ps: prefer --cookie-file or {COOKIE_ENV})"
    )
    group.add_argument("--cookie-file", type=Path, help="file holding the cluster cookie")


def cookie_from(
    args: argparse.Namespace, configured: str | tuple[str, ...] | None
) -> tuple[str, ...]:
    """The cookies: --cookie / --cookie-file, else the config's, else $PYCLUSTER_COOKIE;
    from every source alike, without surrounding whitespace and of at least 16 characters
    (a ConfigError naming the source otherwise)."""
    cookie: str | tuple[str, ...] | None
    if args.cookie:
        source, cookie = "--cookie", str(args.cookie)
    elif args.cookie_file is not None:
        source = "--cookie-file"
        try:
            cookie = args.cookie_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(
                [ConfigIssue(source, f"cannot read {args.cookie_file}: {reason}")]
            ) from None
    elif configured:
        source, cookie = "node.cookie", configured
    else:
        source, cookie = COOKIE_ENV, os.environ.get(COOKIE_ENV)
    if not cookie:
        raise ConfigError(
            [
                ConfigIssue(
                    "node.cookie",
                    f"a cookie is required: set node.cookie, --cookie-file or {COOKIE_ENV}",
                )
            ]
        )
    try:
        return checks.cookies(cookie)
    except ValueError as exc:
        raise ConfigError([ConfigIssue(source, str(exc))]) from None


def _node_count(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,2}", text) or not 1 <= int(text) <= 20:
        raise argparse.ArgumentTypeError(f"expected a number of nodes from 1 to 20, got {text!r}")
    return int(text)


def _checked_config(args: argparse.Namespace) -> Config:
    """The config, and its app resolved (imported, not run) when it names one."""
    config = load_config(args.config)
    if config.app is not None:
        app.resolve(config.app, args.app_dir)
    return config


def _check(args: argparse.Namespace) -> int:
    if not args.json:
        config = _checked_config(args)
        print(f"{args.config}: ok: {summary(config)}")
        return 0
    problems: list[dict[str, str]] = []
    try:
        _checked_config(args)
    except ConfigError as exc:
        problems = [{"path": issue.path, "message": issue.message} for issue in exc.issues]
    except PluginError as exc:
        problems = [{"path": "", "message": str(exc)}]
    result = {"config": args.config, "ok": not problems, "problems": problems}
    print(json.dumps(result, indent=2))
    return EXIT_CONFIG if problems else 0


def summary(config: Config) -> str:
    """One line describing a valid config."""
    topologies = ", ".join(f"{name} ({t.strategy})" for name, t in config.topologies.items())
    registry = config.registry.backend
    count = len(config.topologies)
    return (
        f"node {config.node.name} (port {config.node.port}), registry {registry}, "
        f"{count} topolog{'y' if count == 1 else 'ies'}" + (f": {topologies}" if count else "")
    )


def _run(args: argparse.Namespace) -> int:
    tune_garbage_collector()  # before the app is imported: an app that sets its own wins
    overrides: dict[str, object] = {}
    if args.name is not None:
        overrides["node.name"] = args.name
    if args.port is not None:
        overrides["node.port"] = args.port
    if args.app is not None:
        overrides["app"] = args.app
    config = load_config(args.config, overrides=overrides)
    cookie = cookie_from(args, config.node.cookie)
    service = None if config.app is None else app.resolve(config.app, args.app_dir)
    return asyncio.run(_run_node(config, cookie, args.log_format, service))


def tune_garbage_collector() -> None:
    """Collect the youngest generation every GC_FIRST_THRESHOLD allocations, not every 700.

    A node that holds many names (two long-lived objects each) pays for each full
    collection in proportion: about 100 ms of CPU at 100,000 names. Objects that live a
    little while (a snapshot's entries, a batch's events) survive 700 allocations and are
    promoted, and promotions are what bring the next full collection. With the young
    generation this large they die in it. (An embedded Node leaves the collector alone.)
    """
    gc.set_threshold(GC_FIRST_THRESHOLD, *gc.get_threshold()[1:])


def raise_fd_limit() -> None:
    """Raise this process's soft limit of open files to the hard limit: a node's peers,
    probes and clients each hold one (an embedded Node leaves process limits alone)."""
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = FD_LIMIT_CEILING if hard == resource.RLIM_INFINITY else hard
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log asyncio's "accept() out of system resource" (out of file descriptors) as one
    line a minute, not a traceback a second per listening socket; every other error goes
    to the loop's default handler as before."""
    throttle = Throttle(60.0)

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if not message.startswith("socket.accept() out of system resource"):
            loop.default_exception_handler(context)
        else:
            throttle.warn(
                log,
                "accept",
                "the cluster port cannot accept connections (%s); retrying every second",
                context.get("exception"),
                extra={"event": "accept_failed", "port": "cluster"},
            )

    loop.set_exception_handler(handler)


async def _run_node(
    config: Config,
    cookie: tuple[str, ...],
    log_format: LogFormat,
    service: app.App | None = None,
) -> int:
    raise_fd_limit()
    quiet_accept_errors(asyncio.get_running_loop())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    node = Node(config, cookie=cookie)
    node.register_mailbox(LEAVE_MAILBOX, lambda sender, body: stop.set())  # pycluster leave
    configure_logging(log_format, node=node.name, level=logging.getLogger().level)
    try:
        await node.start()
    except OSError as exc:
        print(f"pycluster: cannot listen as {config.node.name}: {exc}", file=sys.stderr)
        await node.stop()
        return EXIT_UNREACHABLE
    try:
        if service is None or config.app is None:
            await stop.wait()
        else:
            return await _serve(node, config.app, service, stop)
        log.info("%s: leaving the cluster", node.name, extra={"event": "leaving"})
    finally:
        await node.stop()
    return 0


async def _serve(node: Node, spec: str, service: app.App, stop: asyncio.Event) -> int:
    """Run the app on ``node`` until ``stop``: called once the node is first ready; the
    node is ready (``/readyz``) only while it runs, from its start to the stop signal."""
    serving = False
    node.add_readiness_check("app", lambda: serving)
    stopped = asyncio.ensure_future(stop.wait())
    while not node.ready():  # the first readiness: min_peers connected and merged
        done, _ = await asyncio.wait({stopped}, timeout=0.05)
        if done:
            return 0
    try:
        lifespan = await app.enter(spec, service, node)
    except app.AppError as exc:
        stopped.cancel()
        log.error("%s: %s", node.name, exc, exc_info=exc.__cause__, extra={"event": "app_failed"})
        print(f"pycluster: {exc}", file=sys.stderr)
        return EXIT_APP_FAILED
    serving = True
    log.info("%s: %s started", node.name, spec, extra={"event": "app_started"})
    await stopped
    serving = False  # /readyz answers 503 from here on
    log.info("%s: leaving the cluster", node.name, extra={"event": "leaving"})
    if lifespan is not None:
        try:
            await lifespan.__aexit__(None, None, None)
        except Exception:
            log.exception("%s: %s failed while stopping", node.name, spec)
    return 0


def _status(args: argparse.Namespace) -> int:
    cookie = cookie_from(args, None)
    try:
        status = asyncio.run(ask_status(args.node, cookie, port=args.port, timeout=args.timeout))
    except (NotConnected, TimeoutError) as exc:
        print(f"pycluster: cannot get the status of {args.node}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return 0
    print(f"{status['node']} sees {len(status['nodes'])} node(s)")
    for peer in status["nodes"]:
        print(f"  {peer}")
    for name, topology in status["topologies"].items():
        print(f"topology {name}: {topology['strategy']} {topology['state']}")
        if topology.get("problem"):
            print(
                f"  problem since {topology.get('problem_since')}, "
                f"{topology.get('failed_attempts')} failed attempt(s): {topology['problem']}"
            )
        if topology.get("last_error"):
            print(f"  last crash: {topology['last_error']}")
    registry = status.get("registry") or {}
    synced = "synced" if registry.get("synced") else "still merging with its peers"
    print(f"registry: {registry.get('backend')}, {registry.get('names')} name(s), {synced}")
    return 0


def _top(args: argparse.Namespace) -> int:
    from pycluster.top import run_top  # rich is imported only by this command

    cookie = cookie_from(args, None)
    try:
        return asyncio.run(
            run_top(
                args.node,
                cookie,
                port=args.port,
                timeout=args.timeout,
                interval=args.interval,
                once=args.once,
            )
        )
    except (NotConnected, TimeoutError) as exc:
        print(f"pycluster: cannot get the view of {args.node}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE


def _remote(args: argparse.Namespace) -> int:
    cookie = cookie_from(args, None)
    try:
        return asyncio.run(run_remote(args.node, cookie, port=args.port, timeout=args.timeout))
    except (NotConnected, TimeoutError) as exc:
        print(f"pycluster: cannot connect to {args.node}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE


def _leave(args: argparse.Namespace) -> int:
    cookie = cookie_from(args, None)
    try:
        asyncio.run(ask_to_leave(args.node, cookie, port=args.port, timeout=5.0))
    except (NotConnected, TimeoutError) as exc:
        print(f"pycluster: cannot ask {args.node} to leave: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except RemoteError:
        print(
            f"pycluster: {args.node} takes no leave request (only nodes run by `pycluster run` do)",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    if not asyncio.run(_gone(args.node, cookie, args.port, args.timeout)):
        print(f"pycluster: {args.node} is still running after {args.timeout} s", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(f"{args.node} left the cluster")
    return 0


async def _gone(node: str, cookie: tuple[str, ...], port: int, timeout: float) -> bool:
    """Whether ``node`` stops answering within ``timeout`` seconds (it has left)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await ask_status(node, cookie, port=port, timeout=1.0)
        except (NotConnected, TimeoutError):
            return True
        await asyncio.sleep(0.2)
    return False


def _demo(args: argparse.Namespace) -> int:
    status: int = asyncio.run(run_demo(args.nodes))
    return status
