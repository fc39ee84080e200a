"""The parts under the backend and the strategy: keys, fencing arithmetic, the watched copy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from conftest import eventually
from etcd_lab import EtcdServer
from hypothesis import given, settings
from hypothesis import strategies as st
from pycluster_etcd.client import EtcdClient, target
from pycluster_etcd.lease import Fence, keepalive_interval, margin_for
from pycluster_etcd.mirror import Change, Mirror, diff
from pycluster_etcd.options import EtcdConnection, parse_endpoint
from pycluster_etcd.registry import Keys, decode_ref, encode_ref

from pycluster.registry import ActorRef

texts = st.text(min_size=1, max_size=40)


# Example timing is not what these check: no per-example deadline on a loaded machine.
@settings(deadline=None)
@given(prefix=texts, name=texts, group=texts, node=texts, actor=texts)
def test_keys_round_trip_whatever_the_names(
    prefix: str, name: str, group: str, node: str, actor: str
) -> None:
    keys = Keys(prefix)
    ref = ActorRef(node, actor)
    assert keys.parse_name(keys.name(name)) == name
    assert keys.parse_member(keys.member(group, ref)) == (group, ref)
    assert keys.parse_member(keys.name(name)) is None
    assert keys.parse_name(keys.member(group, ref)) is None
    assert decode_ref(encode_ref(ref)) == ref


def test_values_not_written_by_the_backend_are_not_refs() -> None:
    for value in (b"", b"{", b'{"node": "a"}', b'["a"]', b'["a", 1]'):
        assert decode_ref(value) is None


@settings(deadline=None)
@given(
    ttl=st.integers(min_value=2, max_value=600),
    sends=st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=20),
)
def test_the_fence_falls_before_etcd_could_expire_the_lease(ttl: int, sends: list[float]) -> None:
    fence = Fence(float(ttl), margin_for(ttl))
    for sent in sends:  # acknowledgements may arrive out of order
        fence.acknowledge(sent)
    last = max(sends)
    deadline = fence.deadline()
    assert deadline is not None
    # etcd keeps the lease at least until last + ttl; we give up margin seconds before.
    assert deadline == last + ttl - margin_for(ttl)
    assert deadline <= last + ttl - 0.5
    assert fence.holds(deadline - 0.01)
    assert not fence.holds(deadline)
    # Several keepalives fit before the deadline.
    assert keepalive_interval(ttl) * 3 < ttl - margin_for(ttl)


def test_a_fence_without_acknowledgement_holds_nothing() -> None:
    fence = Fence(10.0, 2.0)
    assert fence.deadline() is None
    assert not fence.holds(0.0)
    fence.acknowledge(5.0)
    fence.reset()
    assert not fence.holds(5.0)


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        (("10.0.0.1:2379",), "ipv4:10.0.0.1:2379"),
        (("http://10.0.0.1:2379", "10.0.0.2:2379"), "ipv4:10.0.0.1:2379,10.0.0.2:2379"),
        (("[::1]:2379", "[fd00::2]:2379"), "ipv6:[::1]:2379,[fd00::2]:2379"),
        (("https://etcd.db.svc:2379/",), "dns:///etcd.db.svc:2379"),
    ],
)
def test_endpoints_become_one_grpc_target(endpoints: tuple[str, ...], expected: str) -> None:
    assert target(endpoints) == expected


@pytest.mark.parametrize(
    "text", ["etcd", "10.0.0.1", "10.0.0.1:0", "[::1]", "a:b:2379", "h:\u00b2", "h:\u0662\u0663"]
)
def test_malformed_endpoints(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected|bad port"):
        parse_endpoint(text)


@settings(deadline=None)
@given(
    old=st.dictionaries(st.binary(max_size=3), st.binary(max_size=3)),
    new=st.dictionaries(st.binary(max_size=3), st.binary(max_size=3)),
)
def test_diff_turns_the_old_copy_into_the_new(
    old: dict[bytes, bytes], new: dict[bytes, bytes]
) -> None:
    copy = dict(old)
    for key, value, _ in diff(old, new, 1):
        if value is None:
            del copy[key]
        else:
            copy[key] = value
    assert copy == new


# -- the watched copy, against etcd ---------------------------------------------------------


@contextlib.asynccontextmanager
async def connected(etcd: EtcdServer) -> AsyncIterator[EtcdClient]:
    client = EtcdClient(EtcdConnection(endpoints=(etcd.endpoint,)))
    await client.open()
    try:
        yield client
    finally:
        await client.close()


async def truth(client: EtcdClient, prefix: str) -> dict[bytes, bytes]:
    from etcd3aio.kv import prefix_range_end

    response = await client.kv.get(prefix, prefix_range_end(prefix), timeout=5)
    return {bytes(kv.key): bytes(kv.value) for kv in response.kvs}


@pytest.mark.parametrize("compacted", [False, True])
async def test_a_broken_watch_resumes_from_its_revision_or_lists_again_if_compacted(
    etcd: EtcdServer, prefix: str, compacted: bool
) -> None:
    seen: list[Change] = []
    async with connected(etcd) as client:
        for i in range(5):
            await client.kv.put(f"{prefix}k{i}", f"v{i}", timeout=5)
        mirror = Mirror(client, prefix.encode(), what="test", on_change=seen.extend)
        task = asyncio.ensure_future(mirror.run())
        await eventually(lambda: len(mirror.items) == 5)
        await client.kv.put(f"{prefix}k5", "v5", timeout=5)
        await eventually(lambda: len(mirror.items) == 6)
        task.cancel()  # the watch breaks
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # Meanwhile: changes, one of them undone, and maybe a compaction of that history.
        await client.kv.delete(f"{prefix}k0", timeout=5)
        await client.kv.put(f"{prefix}k1", "changed", timeout=5)
        await client.kv.put(f"{prefix}gone", "briefly", timeout=5)
        await client.kv.delete(f"{prefix}gone", timeout=5)
        response = await client.kv.put(f"{prefix}k6", "v6", timeout=5)
        if compacted:
            await client.kv.compact(int(response.header.revision), physical=True, timeout=5)
        seen.clear()
        task = asyncio.ensure_future(mirror.run())
        try:
            expected = await truth(client, prefix)
            await eventually(lambda: mirror.items == expected)
            assert mirror.relists == (1 if compacted else 0)
            copy: dict[bytes, bytes] = {}
            for key, value, _ in seen:
                if value is None:
                    copy.pop(key, None)
                else:
                    copy[key] = value
            changed = {k: v for k, v in expected.items() if k.endswith((b"k1", b"k6"))}
            assert copy == changed
            assert (prefix + "k0").encode() in {k for k, v, _ in seen if v is None}
            # And it keeps following.
            await client.kv.put(f"{prefix}k7", "v7", timeout=5)
            await eventually(lambda: mirror.items.get(f"{prefix}k7".encode()) == b"v7")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_each_change_carries_the_revision_that_made_it(etcd: EtcdServer, prefix: str) -> None:
    # The registry drops reported changes older than a claim it applied from etcd's answer,
    # so a deletion must carry the revision of the deletion, not of the value it removed.
    seen: list[Change] = []
    async with connected(etcd) as client:
        mirror = Mirror(client, prefix.encode(), what="test", on_change=seen.extend)
        task = asyncio.ensure_future(mirror.run())
        try:
            await eventually(mirror.loaded.is_set)
            put = await client.kv.put(f"{prefix}k", "v", timeout=5)
            deleted = await client.kv.delete(f"{prefix}k", timeout=5)
            await eventually(lambda: len(seen) == 2)
            key = f"{prefix}k".encode()
            assert seen == [
                Change(key, b"v", int(put.header.revision)),
                Change(key, None, int(deleted.header.revision)),
            ]
            assert mirror.revision == int(deleted.header.revision)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
