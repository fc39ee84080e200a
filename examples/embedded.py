"""A pycluster node inside an existing asyncio web application (aiohttp here).

The node starts with the application and leaves the cluster when it shuts down, through
aiohttp's cleanup context; FastAPI's ``lifespan`` works the same way (see the docs page
"Running a node"). Run two of these and they form a cluster:

    export PYCLUSTER_COOKIE=$(openssl rand -base64 24)  # at least 16 characters
    python examples/embedded.py --name web1@127.0.0.2 --peers web2@127.0.0.3 &
    python examples/embedded.py --name web2@127.0.0.3 --peers web1@127.0.0.2 &
    curl http://127.0.0.2:8080/cluster
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator

from aiohttp import web

import pycluster
from pycluster import Node

NODE = web.AppKey("node", Node)


def make_app(name: str, peers: list[str], cookie: str) -> web.Application:
    """The web application, with a cluster node living as long as it does."""
    config = pycluster.load_config(
        {
            "node": {"name": name},
            "topologies": {"peers": {"strategy": "epmd", "config": {"hosts": [name, *peers]}}},
        }
    )

    async def cluster_node(app: web.Application) -> AsyncIterator[None]:
        async with Node(config, cookie=cookie) as node:
            node.register_mailbox("hello", lambda sender, body: f"hello {sender}, I am {name}")
            app[NODE] = node
            yield

    async def cluster(request: web.Request) -> web.Response:
        node = request.app[NODE]
        greetings = {peer: await node.call(peer, "hello", None) for peer in node.nodes()}
        return web.json_response({"node": node.name, "nodes": node.nodes(), "hello": greetings})

    app = web.Application()
    app.cleanup_ctx.append(cluster_node)
    app.add_routes([web.get("/cluster", cluster)])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="this node's name, e.g. web1@127.0.0.2")
    parser.add_argument("--peers", nargs="*", default=[], help="other nodes' names")
    parser.add_argument("--http-port", type=int, default=8080)
    args = parser.parse_args()
    app = make_app(args.name, args.peers, os.environ["PYCLUSTER_COOKIE"])
    host = pycluster.parse_node_name(args.name).host
    web.run_app(app, host=host, port=args.http_port, print=None)


if __name__ == "__main__":
    main()
