"""The ``etcd`` backend passes the registry contract every backend passes."""

from __future__ import annotations

import pytest
from conftest import make_node, mesh
from etcd_lab import EtcdServer

from pycluster.testing import CONTRACT, ContractCheck


@pytest.mark.parametrize("check", CONTRACT, ids=str)
async def test_contract(check: ContractCheck, etcd: EtcdServer, prefix: str) -> None:
    nodes = [make_node(i, [etcd.endpoint], prefix) for i in range(check.nodes)]
    try:
        for node in nodes:
            await node.start()
        await mesh(nodes)
        await check.run(nodes)
    finally:
        for node in nodes:
            await node.stop()
