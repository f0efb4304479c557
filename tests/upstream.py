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
    def __init__(self, app: Any) -> None:
        self.app = app
        self.faults = Faults()
        self.observed = Observed()
        self._sock = loopback_socket()
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_level="critical", lifespan="off", timeout_graceful_shutdown=1
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
