"""Real HTTP fake upstreams on 127.0.0.1 for provider and router tests.

``FakeUpstream(app)`` serves any ASGI app (usually a small Starlette app written by the test
module for the wire format it fakes) with uvicorn in a background thread, on a free loopback
port. ``Faults`` lets a test make it misbehave; ``Observed`` records what it saw (requests, and
whether a streamed response was abandoned by its client).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn


def loopback_socket() -> socket.socket:
    """A TCP socket bound to a free port on 127.0.0.1, for a uvicorn server to serve on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def start_serving(server: uvicorn.Server, thread: threading.Thread, what: str) -> None:
    """Start ``thread`` (which runs ``server``) and wait up to 10 s for the server to be started;
    a ``RuntimeError`` if it is not (or the thread has ended)."""
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.01)


@dataclass
class Faults:
    """How the upstream misbehaves on its next answers (tests set these)."""

    status: int | None = None  # answer this status with an error body
    retry_after: str | None = None  # Retry-After header with `status`
    hang_before_first_byte: float = 0.0  # sleep before answering at all
    hang_after_chunks: int | None = None  # stop sending after N chunks ...
    hang_seconds: float = 0.0  # ... for this long
    cut_after_chunks: int | None = None  # close the connection after N chunks
    malformed: bool = False  # send invalid JSON instead of the answer
    chunk_delay: float = 0.0  # between streamed chunks


@dataclass
class Observed:
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    disconnects: int = 0  # streamed responses whose client went away before the end
    completed_streams: int = 0


class FakeUpstream:
    """``tls``: (certificate, key) PEM files to serve https on ``localhost`` with."""

    def __init__(self, app: Any, tls: tuple[str, str] | None = None) -> None:
        self.app = app
        self.faults = Faults()
        self.observed = Observed()
        self._sock = loopback_socket()
        self.port = self._sock.getsockname()[1]
        self.url = f"https://localhost:{self.port}" if tls else f"http://127.0.0.1:{self.port}"
        certfile, keyfile = tls or (None, None)
        config = uvicorn.Config(
            app,
            log_level="critical",
            lifespan="off",
            timeout_graceful_shutdown=1,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def start(self) -> FakeUpstream:
        start_serving(self._server, self._thread, "fake upstream")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._sock.close()

    def reset(self) -> None:
        self.faults = Faults()
        self.observed = Observed()

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def refused_url() -> str:
    """A loopback URL on which nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class ForwardProxy:
    """An HTTP proxy on 127.0.0.1 for the upstream clients' tests: each client connection is
    relayed, as it is, to the host its first request names (absolute-form ``POST http://host:
    port/path``, which HTTP/1.1 servers accept) or, for ``CONNECT host:port``, tunnelled after a
    200. ``requests`` records each connection's first request line."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self._sock = loopback_socket()
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not writer.is_closing():
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        self.requests.append(line)
        method, target, _ = line.split(" ", 2)
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
        else:
            authority = target.split("://", 1)[1].split("/", 1)[0]
            host, _, port = authority.rpartition(":")
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            upstream_writer.write(head)
        await asyncio.gather(
            self._relay(reader, upstream_writer), self._relay(upstream_reader, writer)
        )

    def start(self) -> ForwardProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, sock=self._sock), self._loop
        )
        self._server = future.result(timeout=10)
        return self

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        current = asyncio.current_task()
        relays = [task for task in asyncio.all_tasks() if task is not current]
        for task in relays:  # connections still relayed: end them, not leave them pending
            task.cancel()
        await asyncio.gather(*relays, return_exceptions=True)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
        self._sock.close()

    def __enter__(self) -> ForwardProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
