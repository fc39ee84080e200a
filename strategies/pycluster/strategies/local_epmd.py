"""``local_epmd``: the nodes on this host, found through a runtime directory they write."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

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

ENTRY_SUFFIX = ".json"
MAX_ENTRY_SIZE = 64 * 1024
"""Entries are a few dozen bytes; anything larger is not one."""
MAX_PID = 2**31 - 1
# File names stay well under the usual 255-byte limit; longer node names are hashed.
LONGEST_FILE_NAME = 200

_GROUP = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")


def group_name(value: str) -> str | None:
    """A single, visible path component: letters, digits, '_', '-', '.', no leading '.'."""
    if _GROUP.fullmatch(value):
        return None
    return "expected letters, digits, '_', '-' or '.', not starting with '.'"


def absolute_path(value: str) -> str | None:
    """An absolute path (a relative one would depend on each node's working directory)."""
    return None if os.path.isabs(value) else "expected an absolute path"


@attrs.frozen(kw_only=True)
class LocalEpmdConfig:
    """Config of the ``local_epmd`` strategy."""

    runtime_dir: str | None = setting(
        default=None,
        doc="Absolute path of the directory the nodes of this host register in. By default "
        "``$XDG_RUNTIME_DIR/pycluster`` when ``XDG_RUNTIME_DIR`` is set, else "
        "``/tmp/pycluster-UID`` (UID: the user's numeric id).",
        check=absolute_path,
    )
    group: str = setting(
        default="default",
        doc="Subdirectory of ``runtime_dir``: only nodes of the same group find each other, "
        "so unrelated clusters on one host stay apart. Letters, digits, ``_``, ``-`` and "
        "``.``, not starting with ``.``.",
        check=group_name,
    )
    polling_interval: float = setting(
        default=500,
        doc="How often the directory is read.",
        unit="ms",
        check=checks.positive_duration,
    )


@attrs.frozen
class Entry:
    """One node's registration: its name and the process that runs it."""

    name: str
    pid: int


def parse_entry(data: bytes) -> Entry:
    """The entry an entry file holds; ValueError says what is wrong with it."""
    try:
        fields = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise ValueError("not valid JSON") from None
    if not isinstance(fields, dict):
        raise ValueError("not a JSON object")
    name, pid = fields.get("name"), fields.get("pid")
    if not isinstance(name, str):
        raise ValueError("no 'name' string")
    # pid 0 and negative pids would make os.kill signal whole process groups.
    if type(pid) is not int or not 0 < pid <= MAX_PID:
        raise ValueError("no 'pid' process id")
    try:
        node = parse_node_name(name)
    except NodeNameError as exc:
        raise ValueError(f"{name[:80]!r} is not a node name ({exc})") from None
    return Entry(str(node), pid)


def entry_file_name(node: str) -> str:
    """The file a node's entry is stored in: its name, percent-encoding what is not a
    letter, digit, ``@``, ``_``, ``-`` or ``.`` (IPv6 brackets, port colons)."""
    name = quote(node, safe="@")
    if len(name) > LONGEST_FILE_NAME:
        digest = hashlib.sha256(node.encode()).hexdigest()[:16]
        name = f"{name[: LONGEST_FILE_NAME - len(digest) - 1]}-{digest}"
    return name + ENTRY_SUFFIX


def runtime_dir(configured: str | None, environ: Mapping[str, str]) -> tuple[Path, bool]:
    """The runtime directory, and whether it must be checked to be this user's own (the
    default under /tmp, where any user could have created it first)."""
    if configured is not None:
        return Path(configured), False
    xdg = environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "pycluster", False
    return Path(f"/tmp/pycluster-{os.getuid()}"), True


def make_directory(base: Path, directory: Path, *, must_own: bool) -> None:
    """Create ``base`` and its subdirectory ``directory`` (mode 0o700) if missing; with
    ``must_own``, refuse a ``base`` that this user does not own or others can write."""
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    if must_own:
        info = base.lstat()
        if (
            not stat.S_ISDIR(info.st_mode)
            or info.st_uid != os.getuid()
            or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        ):
            raise PermissionError(
                errno.EPERM, "not a directory of this user that only this user can write"
            )
    directory.mkdir(mode=0o700, exist_ok=True)


def read_entry(path: Path | str) -> Entry:
    """The entry in ``path``; OSError if it cannot be read, ValueError if it is not one."""
    with open(path, "rb") as file:
        data = file.read(MAX_ENTRY_SIZE + 1)
    if len(data) > MAX_ENTRY_SIZE:
        raise ValueError(f"larger than {MAX_ENTRY_SIZE} bytes")
    return parse_entry(data)


def is_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 checks without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` at once (mode 0o600), so readers never see half an entry."""
    # The leading '.' keeps a temporary file, even one a crash left behind, out of scans.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def register(own: Path, me: Entry) -> Entry | None:
    """Write ``me`` to ``own`` unless it already holds the entry of a live process (this
    one, or another with the same node name); return that entry, or None once written."""
    try:
        there: Entry | None = read_entry(own)
    except (FileNotFoundError, ValueError):
        there = None
    if there is not None and is_alive(there.pid):
        return there
    write_atomically(own, json.dumps({"name": me.name, "pid": me.pid}))
    return None


def unregister(own: Path, pid: int) -> None:
    """Remove ``own`` if it still holds ``pid``'s entry (best effort)."""
    with contextlib.suppress(OSError, ValueError):
        if read_entry(own).pid == pid:
            own.unlink()


def scan(directory: Path) -> tuple[list[str], list[str]]:
    """Names of the live nodes registered in ``directory``, and a description of each bad
    entry. Entries of processes that are gone are removed. OSError if it cannot be listed."""
    with os.scandir(directory) as listing:
        files = sorted(
            (f for f in listing if f.name.endswith(ENTRY_SUFFIX) and not f.name.startswith(".")),
            key=lambda f: f.name,
        )
    names: list[str] = []
    problems: list[str] = []
    for file in files:
        try:
            if not file.is_file(follow_symlinks=False):
                raise ValueError("not a regular file")
            entry = read_entry(file.path)
        except FileNotFoundError:
            continue  # unregistered since the listing
        except OSError as exc:
            problems.append(f"{file.name}: {exc.strerror or exc}")
            continue
        except ValueError as exc:
            problems.append(f"{file.name}: {exc}")
            continue
        if is_alive(entry.pid):
            names.append(entry.name)
        else:
            # Best effort: if the node restarted meanwhile, it registers again next poll.
            with contextlib.suppress(OSError):
                os.unlink(file.path)
    return names, problems


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


class LocalEpmd(Strategy):
    """Connects the pycluster nodes running on this host, found through a directory they
    share (as Erlang's epmd knows the nodes of its host).

    Each node using this strategy registers itself in ``runtime_dir/group/``: one small
    JSON file holding its node name and process id, replaced atomically, and removed when
    the strategy stops (on shutdown, cancellation or a crash). Every ``polling_interval``
    the node reads the directory and connects the nodes it finds. Entries of processes
    that no longer exist (a node killed with ``kill -9``) are ignored and removed; bad
    entries are reported once, skipped, and counted at each read
    (``pycluster_discovery_dropped_total``, reason ``bad_entry``). A node whose entry
    disappears while other nodes remain listed is disconnected and kept out until it
    registers again; a node whose own entry was removed by someone else registers again at
    its next poll. A directory that cannot be read changes nothing.

    Directories are created with mode ``0700`` and entries with mode ``0600``: the
    directory belongs to one user, so only that user's nodes find each other. The default
    ``/tmp/pycluster-UID`` is refused when another user owns it or others can write it.
    Node names are still dialled, so each node must listen on an address of its own
    (``127.0.0.x``, or its own port).
    """

    name = "local_epmd"
    Config = LocalEpmdConfig

    async def run(self, topology: Topology) -> None:
        config: LocalEpmdConfig = topology.config
        base, must_own = runtime_dir(config.runtime_dir, os.environ)
        directory = base / config.group
        # The full name: a node with another node.port reads a bare one as its own port.
        me = Entry(topology.full_name, os.getpid())
        own = directory / entry_file_name(me.name)
        registered = False

        async def attempt() -> bool:
            nonlocal registered
            answer: list[str] | None = None
            problems: list[str] = []
            reasons: list[str] = []  # a word for each problem: the first is the record's
            try:
                make_directory(base, directory, must_own=must_own)
            except OSError as exc:
                problems.append(f"cannot use {directory} ({_reason(exc)})")
                reasons.append("unusable_directory")
            else:
                try:
                    # On the loop, not in a thread: the removal in `finally` must never
                    # race a registration still being written.
                    there = register(own, me)
                except OSError as exc:
                    problems.append(f"cannot register in {own} ({_reason(exc)})")
                    reasons.append("cannot_register")
                else:
                    if there is None:
                        fields = {"event": "registered", "entry": str(own), "again": registered}
                        if registered:
                            topology.log.info("%s had gone; registered again", own, extra=fields)
                        else:
                            topology.log.info("registered in %s", own, extra=fields)
                        registered = True
                    elif there.pid != me.pid:
                        problems.append(
                            f"{own} holds the entry of another live process (pid "
                            f"{there.pid}) with this node's name; leaving it"
                        )
                        reasons.append("taken")
                try:
                    answer, bad = await asyncio.to_thread(scan, directory)
                except OSError as exc:
                    problems.append(f"cannot read {directory} ({_reason(exc)})")
                    reasons.append("unreadable")
                else:
                    for _ in bad:
                        topology.dropped("bad_entry")
                    if bad:
                        problems.append(f"{directory}: skipped bad entries: " + "; ".join(bad))
                        reasons.append("bad_entries")
            if answer is None:
                problems.append("keeping current nodes")
            topology.problem("; ".join(problems) or None, reason=next(iter(reasons), None))
            await topology.apply(answer)
            return True  # a steady pace: entries appear when nodes start, not sooner

        try:
            await poll(topology, attempt, PollSchedule(config.polling_interval / 1000))
        finally:
            unregister(own, me.pid)
