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
