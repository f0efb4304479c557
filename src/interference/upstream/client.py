"""What providers need from an HTTP client, as two small protocols, and its two failures.

A provider POSTs a body and reads the answer whole (:meth:`UpstreamClient.post`), or streams
it (:meth:`UpstreamClient.stream`: the head first, the body as it arrives). These clients
implement them: :class:`~interference.upstream.fast.FastClient` (HTTP/1.1, measured fastest),
:class:`~interference.upstream.http2.Http2Client` (HTTP/2: many streams share a connection),
:class:`~interference.upstream.negotiated.NegotiatedClient` (one of those two, as the upstream's
TLS handshake decides), :class:`~interference.upstream.httpx_client.HttpxClient` (proxies and
private certificate authorities) and :class:`~interference.upstream.mock.MockClient` (tests
without sockets).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol, TypeAlias


class ConnectError(OSError):
    """The upstream could not be reached (refused, unreachable, name not resolved)."""


class PoolFullError(Exception):
    """Every connection of the pool stayed in use for ``pool_timeout`` seconds: the request was
    not sent. A request never queues for a connection without bound (issue 18: 900 streams had
    waited 25 s at the median for one of 100 connections, with no sign anywhere)."""

    def __init__(self, max_connections: int, waited: float) -> None:
        super().__init__(
            f"all {max_connections} connections to the upstream stayed busy for {waited:.1f} s"
        )
        self.max_connections = max_connections
        self.waited = waited


@dataclass(slots=True)
class PoolWait:
    """Seconds one request waited for a pooled connection, over all its attempts."""

    seconds: float = 0.0


#: the current request's :class:`PoolWait`, set by whoever serves the request (the guard puts
#: it on the request's log line); the clients add the time they wait for a connection to it
POOL_WAIT: ContextVar[PoolWait | None] = ContextVar("pool_wait", default=None)


@dataclass(slots=True)
class PoolStats:
    """A client's connection pool, as ``/v1/providers`` and ``/metrics`` show it."""

    max_connections: int
    pool_timeout: float
    #: "HTTP/1.1" or "HTTP/2" (or what is not settled yet: ``http2: auto`` before its first
    #: connection has negotiated)
    protocol: str = "HTTP/1.1"
    open: int = 0  # connections open now (in use and idle)
    in_use: int = 0  # requests in flight on them (over HTTP/2, many share one connection)
    waiting: int = 0  # requests waiting for a connection now
    waited: int = 0  # requests that had to wait, since start
    wait_seconds: float = 0.0  # ... and how long, in total
    refused: int = 0  # requests refused after ``pool_timeout`` (503 upstream_busy)

    def as_dict(self) -> dict[str, float | str]:
        return {
            "protocol": self.protocol,
            "max_connections": self.max_connections,
            "pool_timeout_s": self.pool_timeout,
            "open": self.open,
            "in_use": self.in_use,
            "waiting": self.waiting,
            "waited": self.waited,
            "wait_seconds": round(self.wait_seconds, 3),
            "refused": self.refused,
        }


class ProtocolError(ValueError):
    """The upstream's answer is malformed or exceeds a bound: a 502, the connection closed."""


class BodyStream(Protocol):
    """A request body sent as it is read (an upload), never whole in memory: its length is
    known in advance (it goes in ``content-length``), and :meth:`pieces` may be called again
    for another attempt, each time from the start."""

    content_type: str
    length: int

    def pieces(self) -> AsyncIterator[bytes]: ...


#: a request body: bytes, or a body read as it is sent
Content: TypeAlias = bytes | BodyStream


async def read_all(content: Content) -> bytes:
    """``content`` whole (clients that cannot stream a request body, and tests)."""
    if isinstance(content, bytes):
        return content
    return b"".join([piece async for piece in content.pieces()])


#: bytes of an answer's body read whole (``aread``: a non-streamed answer, an error's body)
MAX_BODY = 64 << 20


class ReadAnswer:
    """What every client's answer shares: its status, and the body once read whole."""

    status_code: int
    headers: Mapping[str, str]
    _content: bytes | None

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    async def _next_block(self) -> bytes | None:
        """What arrived of the body since the last call (waiting for something), or None at
        its end."""
        raise NotImplementedError

    def close(self) -> None:
        """Give the answer up: what carries it is not reused."""
        raise NotImplementedError

    async def aread(self) -> bytes:
        """The whole body; one over :data:`MAX_BODY` bytes (declared, or as it arrives)
        raises :class:`ProtocolError` and gives the answer up (:meth:`close`)."""
        if self._content is None:
            declared = self.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_BODY:
                self.close()
                raise _body_too_large()
            blocks: list[bytes] = []
            size = 0
            while (block := await self._next_block()) is not None:
                size += len(block)
                if size > MAX_BODY:
                    self.close()
                    raise _body_too_large()
                blocks.append(block)
            self._content = blocks[0] if len(blocks) == 1 else b"".join(blocks)
        return self._content

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise RuntimeError("the body of a streamed response is read with aread()")
        return self._content


def _body_too_large() -> ProtocolError:
    return ProtocolError(f"the upstream's answer exceeds {MAX_BODY} bytes")


class UpstreamResponse(Protocol):
    """The few things providers read from an upstream answer."""

    status_code: int
    #: header names in lower case
    headers: Mapping[str, str]

    @property
    def is_success(self) -> bool: ...

    @property
    def content(self) -> bytes:
        """The body of a :meth:`UpstreamClient.post` answer."""
        ...

    async def aread(self) -> bytes:
        """The whole body (bounded: a body too large raises :class:`ProtocolError`)."""
        ...

    def iter_blocks(self) -> AsyncIterator[bytes]:
        """The body in the pieces it arrives in."""
        ...

    def close(self) -> None:
        """Give the answer up: its connection is closed, not reused."""

    async def drain(self, seconds: float = 1.0) -> None:
        """Read what is left of the body, bounded in time, so the connection can be reused."""


class UpstreamClient(Protocol):
    """A base URL with default headers, and a pool of connections to it."""

    async def post(
        self,
        path: str,
        *,
        content: Content,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> UpstreamResponse:
        """POST ``content`` to ``path`` (under the base URL) and read the whole answer."""
        ...

    def stream(
        self,
        method: str,
        path: str,
        *,
        content: Content,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        """Send a request and hand over the answer with its body unread; leaving the context
        before the body's end closes the connection (the upstream sees it)."""
        ...

    def pool(self) -> PoolStats | None:
        """Its connection pool now (None: it has none, a mock)."""
        ...

    async def aclose(self) -> None:
        """Close every connection."""
