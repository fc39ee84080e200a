"""Every written form of a node's name is that node, across ``pycluster run`` processes.

Nodes of one cluster may each have their own ``node.port``, and a name without a port means
the port of whoever reads it: ``pycluster status`` reaches a node by any name that spells
out its port, whatever ``--port`` says, and an ``epmd`` list that writes each node's port
out (or leaves it out where it is the reader's own) forms a full mesh.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tests.lab import Lab, LabNode
from tests.lab.hosts import declare_node
from tests.lab.lab import HTTP_PORT


def declare(lab: Lab, address: str, node: Mapping[str, Any], hosts: Sequence[str] = ()) -> LabNode:
    """A node on ``address`` with settings ``node`` (name, port), and an ``epmd`` topology
    listing ``hosts`` if any."""
    config: dict[str, Any] = {
        "node": {"net_tick_timeout": 3.0, "http": {"port": HTTP_PORT}, **node},
    }
    if hosts:
        config["topologies"] = {
            "lab": {"strategy": "epmd", "config": {"hosts": list(hosts), "retry_interval": 500}}
        }
    return declare_node(lab, config, address=address)


async def test_status_reaches_a_node_by_any_name_that_spells_out_its_port(lab: Lab) -> None:
    address = lab.address()
    name = f"app@{address}"
    node = declare(lab, address, {"name": name, "port": 30002})
    await lab.start([node])
    for written, port in [
        (f"{name}:30002", None),  # the status client's own default port is 9100
        (f"{name}:30002", 30002),
        (f"{name}:30002", 40000),
        (name, 30002),
    ]:
        options = () if port is None else ("--port", str(port))
        result = await lab.cli("status", "--node", written, *options, "--json")
        assert result.returncode == 0, f"{written} --port {port}: {result.stderr}"
        assert json.loads(result.stdout)["node"] == name
    # Without its port, the name means the client's --port (9100 by default): not this node.
    result = await lab.cli("status", "--node", name, "--timeout", "2")
    assert result.returncode == 1
    assert f"could not connect to {name}" in result.stderr


async def test_nodes_with_their_own_node_port_form_a_mesh(lab: Lab) -> None:
    """n1 has the default node.port, n2 30002, n3 the default but a name with :30003;
    each lists the others with their ports, itself and the nodes on its own port either
    way. Each knows the others by its own canonical names for them."""
    a1, a2, a3 = lab.address(), lab.address(), lab.address()
    n1, n2, n3 = f"n1@{a1}", f"n2@{a2}", f"n3@{a3}:30003"
    nodes = [
        declare(lab, a1, {"name": n1}, [n1, f"{n2}:30002", n3]),
        declare(lab, a2, {"name": n2, "port": 30002}, [f"{n1}:9100", f"{n2}:30002", n3]),
        declare(lab, a3, {"name": n3}, [f"{n1}:9100", f"{n2}:30002", n3]),
    ]
    expected = [
        [f"{n2}:30002", n3],
        [f"{n1}:9100", n3],
        [n1, f"{n2}:30002"],
    ]
    await lab.start(nodes)

    async def meshed() -> bool:
        return await lab.views(nodes) == expected

    await lab.until(meshed, timeout=20, what=f"the mesh {expected}")
    for node, peers in zip(nodes, expected, strict=True):
        events = node.events()
        assert sorted(e.peer for e in events if e.kind == "up") == peers, node.name
        assert [e for e in events if e.kind == "down"] == [], node.name
        # No handshake failed over a name.
        metrics = await lab.metrics(node)
        assert metrics.get('pycluster_handshake_failures_total{kind="name"}', 0) == 0, node.name
    await lab.stop(nodes)
    assert [node.exit_code for node in nodes] == [0] * len(nodes)
