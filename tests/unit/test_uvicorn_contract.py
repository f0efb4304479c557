"""What interference relies on inside uvicorn, beyond its public API, checked by name and shape
so that a uvicorn release that moves one fails here, loudly, rather than in production.

- ``server.http_protocol`` subclasses ``HttpToolsProtocol`` (a bound on the time to receive a
  request's head): its constructor, ``connection_made``, ``on_message_begin``,
  ``on_headers_complete``, and the ``loop``, ``connections`` and ``transport`` attributes;
- ``server.run_app`` subclasses ``uvicorn.Server``: ``startup``, ``shutdown``,
  ``capture_signals``, ``handle_exit``, ``started`` and ``servers``;
- ``logs.UnfinishedResponseFilter`` drops uvicorn's line for a response the guard ended on
  purpose, matched by its text.

pyproject.toml keeps uvicorn below 1.0 as well.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from interference.logs import UnfinishedResponseFilter


async def _app(scope: object, receive: object, send: object) -> None:
    return None


def test_the_httptools_protocol_we_extend() -> None:
    parameters = list(inspect.signature(HttpToolsProtocol.__init__).parameters)
    assert parameters[:4] == ["self", "config", "server_state", "app_state"]
    for hook in ("connection_made", "on_message_begin", "on_headers_complete"):
        assert callable(getattr(HttpToolsProtocol, hook)), hook

    async def make() -> HttpToolsProtocol:
        config = uvicorn.Config(_app, http="httptools", log_config=None)
        config.load()
        return HttpToolsProtocol(config=config, server_state=ServerState(), app_state={})

    protocol = asyncio.run(make())
    assert isinstance(protocol.loop, asyncio.AbstractEventLoop)
    assert isinstance(protocol.connections, set)
    assert "transport" in inspect.getsource(HttpToolsProtocol.connection_made)


def test_the_server_we_extend() -> None:
    for method in ("startup", "shutdown"):
        assert list(inspect.signature(getattr(uvicorn.Server, method)).parameters) == [
            "self",
            "sockets",
        ]
    assert list(inspect.signature(uvicorn.Server.handle_exit).parameters) == [
        "self",
        "sig",
        "frame",
    ]
    assert callable(uvicorn.Server.capture_signals)
    server = uvicorn.Server(uvicorn.Config(_app))
    assert server.started is False
    assert hasattr(server, "should_exit")
    assert "self.servers" in inspect.getsource(uvicorn.Server)


def test_the_log_line_we_drop_is_still_uvicorn_s() -> None:
    source = Path(httptools_impl.__file__).read_text()
    assert '"ASGI callable returned without completing response."' in source
    assert "ASGI callable returned without completing response." in inspect.getsource(
        UnfinishedResponseFilter
    )


class _Transport(asyncio.Transport):
    """What the protocol writes, and nothing sent anywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 1337)}.get(name, default)

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


def test_head_lines_go_into_the_head_uvicorn_writes() -> None:
    """``server.http_protocol`` offers ``scope[HEAD_LINES]``: lines an app adds go into the
    response head that uvicorn writes with one ``transport.write`` (a pipelined request's
    answer, whose cycle is no longer the connection's, is refused them)."""
    from interference.api.guard import HEAD_LINES
    from interference.server import http_protocol

    accepted: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        accepted.append(scope[HEAD_LINES](scope, b"x-ratelimit-limit-requests: 7\r\n"))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"ok"})

    async def serve() -> list[bytes]:
        config = uvicorn.Config(app, http="httptools", log_config=None, lifespan="off")
        config.load()
        protocol = http_protocol(5.0)(config=config, server_state=ServerState(), app_state={})
        transport = _Transport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        ask = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n"
        protocol.data_received(ask)  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
        protocol.data_received(ask + ask)  # type: ignore[attr-defined]  # pipelined
        await asyncio.sleep(0.05)
        return transport.written

    written = asyncio.run(serve())
    heads = [w for w in written if w.startswith(b"HTTP/1.1 200")]
    assert len(heads) == 3
    assert accepted == [True, False, True]  # the first of the pipelined two: a later cycle
    for head, took in zip(heads, accepted, strict=True):
        assert head.endswith(b"\r\n\r\n")
        assert head.count(b"x-ratelimit-limit-requests: 7\r\n") == (1 if took else 0)
    assert written.count(b"ok") == 3
