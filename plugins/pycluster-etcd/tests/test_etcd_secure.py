"""etcd with TLS (client certificates required) and user/password authentication."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import eventually, make_node
from etcd3aio.auth import AuthService, PermissionType
from etcd3aio.kv import prefix_range_end
from etcd_lab import EtcdServer
from pycluster_etcd.client import EtcdClient
from pycluster_etcd.options import EtcdConnection, EtcdTls
from pycluster_etcd.registry import EtcdRegistry
from tls_certs import make_pki

from pycluster.actors import Actor
from pycluster.node import Node
from pycluster.registry import ClaimFailed

PREFIX = "/apps/shop/"


def backend(node: Node) -> EtcdRegistry:
    registry = node.registry.backend
    assert isinstance(registry, EtcdRegistry)
    return registry


class Named(Actor):
    async def handle_call(self, message: Any) -> Any:
        return self.node.name


@pytest.fixture
async def secure_etcd(tmp_path: Path) -> AsyncIterator[tuple[EtcdServer, dict[str, str]]]:
    server = EtcdServer(tmp_path, "secure")
    pki = make_pki(tmp_path, server.host)
    server.extra = [
        f"--cert-file={pki['server_cert']}",
        f"--key-file={pki['server_key']}",
        f"--trusted-ca-file={pki['cafile']}",
        "--client-cert-auth",
    ]
    server.scheme = "https"
    server.client_tls = (pki["cafile"], pki["client_cert"], pki["client_key"])
    server.start()
    try:
        await server.until_healthy()
        yield server, pki
    finally:
        server.stop()


async def enable_auth(server: EtcdServer, tls: EtcdTls) -> None:
    """root (needed to enable auth) and ``shop``, who may only use keys under PREFIX."""
    client = EtcdClient(EtcdConnection(endpoints=(server.endpoint,), tls=tls))
    await client.open()
    try:
        auth = AuthService(client.channel)
        await auth.user_add("root", "root-secret", timeout=10)
        await auth.user_grant_role("root", "root", timeout=5)
        await auth.role_add("shop", timeout=5)
        await auth.role_grant_permission(
            "shop", PREFIX, prefix_range_end(PREFIX), perm_type=PermissionType.READWRITE, timeout=5
        )
        await auth.user_add("shop", "shop-secret", timeout=5)
        await auth.user_grant_role("shop", "shop", timeout=5)
        await auth.auth_enable(timeout=5)
    finally:
        await client.close()


async def test_tls_with_client_certificates_and_a_user_limited_to_its_prefix(
    secure_etcd: tuple[EtcdServer, dict[str, str]],
) -> None:
    server, pki = secure_etcd
    tls = {"cafile": pki["cafile"], "certfile": pki["client_cert"], "keyfile": pki["client_key"]}
    await enable_auth(server, EtcdTls(**tls))
    user = {"username": "shop", "password": "shop-secret"}
    endpoints = [server.endpoint]
    a = make_node(0, endpoints, PREFIX, tls=tls, auth=user)
    b = make_node(1, endpoints, PREFIX, tls=tls, auth=user)
    async with a, b:
        ref = await a.registry.spawn("cart", Named)
        await a.registry.join("carts", ref)
        await eventually(lambda: b.registry.whereis("cart") == ref)
        await eventually(lambda: b.registry.members("carts") == [ref])
        assert b.status()["registry"]["etcd"] == "ok"

    guess = {**user, "password": "guess"}
    wrong = make_node(2, endpoints, PREFIX, tls=tls, auth=guess)
    async with wrong:
        lease = backend(wrong).lease
        await eventually(lambda: "authentication failed" in (lease.problem or ""))
        with pytest.raises(ClaimFailed, match="authentication failed"):
            await wrong.registry.spawn("cart", Named)
    elsewhere = make_node(3, endpoints, "/apps/other/", tls=tls, auth=user)
    async with elsewhere:
        registry = backend(elsewhere)
        await eventually(lambda: registry.lease.alive() is not None)  # any user gets a lease
        assert not elsewhere.ready()  # but it may not even read its prefix
        with pytest.raises(ClaimFailed, match="permission denied"):
            await elsewhere.registry.spawn("cart", Named)
    ca_only = {"cafile": pki["cafile"]}
    no_certificate = make_node(4, endpoints, PREFIX, tls=ca_only, auth=user, timeout=1.0)
    async with no_certificate:
        with pytest.raises(ClaimFailed, match="etcd is not usable"):
            await no_certificate.registry.spawn("cart", Named)
