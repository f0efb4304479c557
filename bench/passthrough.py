"""The bare pass-through reference for bench/gateway.py: what any Python gateway costs at least.

FastAPI + one shared aiohttp ``ClientSession``: ``POST /v1/chat/completions`` forwards the body
to the upstream as it is and copies the answer back (a ``StreamingResponse`` relaying the
upstream body as its pieces arrive for event streams). No routing, no validation, no
translation. Served by uvicorn with uvloop and httptools.

    .venv/bin/python bench/passthrough.py --upstream http://127.0.0.1:PORT [--port 0]

It prints ``listening on http://127.0.0.1:PORT`` once the socket is bound.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse


def create_app(upstream: str) -> FastAPI:
    """The pass-through app forwarding to ``upstream`` (a base URL without ``/v1``)."""
    target = f"{upstream.rstrip('/')}/v1/chat/completions"
    sessions: list[aiohttp.ClientSession] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0)  # one connection per concurrent request
        async with aiohttp.ClientSession(connector=connector) as session:
            sessions.append(session)
            yield

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await request.body()
        headers = {"content-type": "application/json"}
        upstream_response = await sessions[0].post(target, data=body, headers=headers)
        content_type = upstream_response.headers.get("content-type", "application/json")
        if not content_type.startswith("text/event-stream"):
            async with upstream_response:
                data = await upstream_response.read()
            return Response(data, upstream_response.status, media_type=content_type)

        async def relay() -> AsyncIterator[bytes]:
            async with upstream_response:
                async for piece in upstream_response.content.iter_any():
                    yield piece

        return StreamingResponse(relay(), upstream_response.status, media_type=content_type)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--port", type=int, default=0, help="0: pick a free port")
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(
        create_app(args.upstream),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        backlog=1024,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
