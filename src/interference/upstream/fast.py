"""The fast HTTP/1.1 client, the default for every remote provider: one keep-alive pool each.

A gateway's upstream client does one thing per call: write a POST, read the answer as it
arrives. This one is an ``asyncio.Protocol`` with httptools' response parser (the C parser
uvicorn uses), so that a call costs what the socket and the parser cost. Measured against the
fake upstream of ``bench/`` (CPU time of the client process per request, one connection): 23 µs
for a non-streamed answer where aiohttp took 166 µs; httpx had been slower still (its pool scans
and polls every pooled connection per request: bench/README.md, "Gateway overhead").

- Connections are kept alive and reused last-in first-out, at most ``max_connections`` in use;
  an idle one is dropped after ``_KEEPALIVE_S`` or as soon as the upstream closes it. A request
  that finds them all in use waits at most ``pool_timeout`` seconds for one, then fails with
  :class:`PoolFullError` (the router tries another deployment, else answers 503
  ``upstream_busy``); the wait is added to the request's :data:`POOL_WAIT` and to the pool's
  :class:`PoolStats`.
- A request on a reused connection that the upstream had closed meanwhile (nothing came back)
  is sent again once on a new connection.
- An upload (a :class:`~interference.upstream.client.BodyStream`) is written as it is read,
  waiting whenever the socket's send buffer is full, so that a large file is never whole in
  memory; an upstream that answers before the end (a 413) stops the writing.
- A streamed body is read as it arrives: every read hands over what the socket had, all of it.
  Reading pauses past ``_HIGH_WATER`` bytes unread, so a slow consumer bounds the buffer.
- Only the connect timeout is the client's: time to first token, idle gaps and the total are
  enforced by the router for every provider kind alike.
- No proxies from the environment, no redirects, no compression (``accept-encoding:
  identity``): a request reaches exactly the configured base URL.
- What an upstream may send is bounded: a response head (its header lines) over ``_MAX_HEAD``
  bytes, or a body read whole (``aread()``: a non-streamed answer, an error's body) over
  ``MAX_BODY`` bytes, fails with :class:`ProtocolError` and closes the connection. A streamed
  body has no size bound here: the router bounds it in time, and the SSE decoder
  (:mod:`interference.upstream.sse`) bounds each event.
- A request given up on while it waits for its answer's head (cancelled: a timeout) closes its
  connection, as does a malformed head.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast

import httptools

from interference import __version__
from interference.telemetry.propagation import UPSTREAM_TRACE
from interference.upstream.client import (
    POOL_WAIT,
    BodyStream,
    ConnectError,
    Content,
    PoolFullError,
    PoolStats,
    ProtocolError,
    ReadAnswer,
)

_KEEPALIVE_S = 30.0
_HIGH_WATER = 1 << 20
_MAX_HEAD = 64 << 10  # bytes of a response's header lines (or of all of an unfinished head)


_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})


def _check_header_values(values: Iterable[str]) -> None:
    for value in values:
        if "\r" in value or "\n" in value:
            raise ValueError("a line break in a request target or header value")


def request_target(
    prefix: str,
    defaults: Mapping[str, str],
    path: str,
    headers: Mapping[str, str] | None,
    params: Mapping[str, str] | None,
) -> tuple[str, Mapping[str, str]]:
    """A request's target (the base URL's path, ``path``, the query) and its headers (the
    client's, then the request's, names in lower case), checked for line breaks: what HTTP/1.1
    and HTTP/2 requests both send."""
    target = prefix + path
    if params:
        target += "?" + urllib.parse.urlencode(params)
    _check_header_values((target,))
    fields = defaults
    if headers:
        _check_header_values(headers.values())
        fields = {**fields, **{k.lower(): v for k, v in headers.items()}}
    return target, fields


def _head_too_large() -> ProtocolError:
    return ProtocolError(f"the upstream's response head exceeds {_MAX_HEAD} bytes")


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection, reading one response at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.broken = False  # closed, or cannot carry another request
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False  # reading paused: too much body unread
        self._writable: asyncio.Future[None] | None = None  # set while writing is paused
        self.clear()

    def clear(self) -> None:
        """Ready for the next response (an unread rest of the last body is dropped)."""
        if self._paused and self.transport is not None:
            self.transport.resume_reading()
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head_done = False
        self.complete = False
        self.received = False  # any byte of this response
        self.error: Exception | None = None
        self._head_size = 0  # bytes of the header lines parsed
        self._head_received = 0  # bytes received while the head was incomplete
        self._pieces: list[bytes] = []
        self._buffered = 0
        self._paused = False

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.error is None:  # else a callback's own error (a head too large)
                self.error = ProtocolError(f"invalid HTTP from the upstream: {exc}")
            self.close()
        if not self.head_done and self.error is None:
            # the parser holds an unfinished header line whole, however long: bound it too
            self._head_received += len(data)
            if self._head_received > _MAX_HEAD:
                self.error = _head_too_large()
                self.close()
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self.transport.pause_reading()
            self._paused = True
        self._wake()

    def eof_received(self) -> bool:
        self.broken = True
        return False  # close our side too

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    async def write_body(self, body: BodyStream) -> None:
        """Send an upload piece by piece as it is read, waiting while the send buffer is full.
        An upstream that closes before the end has answered (or failed): its answer says why."""
        async for piece in body.pieces():
            if self.transport is None or self.transport.is_closing() or self.broken:
                return
            self.transport.write(piece)
            if self._writable is not None:
                await self._writable

    def connection_lost(self, exc: Exception | None) -> None:
        self.resume_writing()
        self.broken = True
        if self.head_done and not self.complete and self._until_close():
            self.complete = True  # a body delimited by the end of the connection
        elif not self.complete and self.error is None:
            self.error = exc or ConnectionResetError("the upstream closed the connection")
        self._wake()

    def _until_close(self) -> bool:
        return "content-length" not in self.headers and "chunked" not in self.headers.get(
            "transfer-encoding", ""
        )

    # --- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4  # "name: value\r\n"
        if self._head_size > _MAX_HEAD:
            self.error = _head_too_large()
            raise self.error  # stops the parser (data_received closes the connection)
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self._pieces.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        self.complete = True
        if not self.parser.should_keep_alive():
            self.broken = True

    # --- reading

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def read_head(self) -> None:
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait()

    async def next_block(self) -> bytes | None:
        """What arrived of the body since the last call (waiting for something), or None
        at its end."""
        while True:
            if self._pieces:
                pieces, self._pieces, self._buffered = self._pieces, [], 0
                if self._paused and self.transport is not None:
                    self.transport.resume_reading()
                    self._paused = False
                return pieces[0] if len(pieces) == 1 else b"".join(pieces)
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            await self._wait()

    def close(self) -> None:
        self.broken = True
        if self.transport is not None:
            self.transport.abort()


class FastResponse(ReadAnswer):
    """An answer read from one of the pool's connections
    (:class:`~interference.upstream.client.UpstreamResponse`)."""

    def __init__(self, connection: _Connection, content: bytes | None = None) -> None:
        self._connection = connection
        self.status_code = connection.status
        self.headers: Mapping[str, str] = connection.headers  # names in lower case
        self._content = content

    def _next_block(self) -> Coroutine[Any, Any, bytes | None]:
        return self._connection.next_block()  # its coroutine, awaited by aread: no frame more

    async def iter_blocks(self) -> AsyncGenerator[bytes, None]:
        """The body in the pieces it arrives in (whatever the socket had, any size)."""
        while (block := await self._connection.next_block()) is not None:
            yield block

    def close(self) -> None:
        """Close the connection now (an answer given up on: it is not reused)."""
        self._connection.close()

    async def drain(self, seconds: float = 1.0) -> None:
        """Read what is left of the body (an SSE stream's end after ``[DONE]``) so the
        connection goes back to the pool instead of being closed; bounded in time."""
        try:
            async with asyncio.timeout(seconds):
                while await self._connection.next_block() is not None:
                    pass
        except (TimeoutError, OSError, ValueError):
            pass


class FastClient:
    """A base URL, default headers and a keep-alive connection pool
    (:class:`~interference.upstream.client.UpstreamClient`)."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        max_connections: int,
        connect_timeout: float,
        pool_timeout: float = 1.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ssl_context`` defaults to the system's trusted certificates (https only)."""
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._prefix = url.path.rstrip("/")
        self._ssl = None
        if url.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        default_port = self._port == (443 if url.scheme == "https" else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._headers = {
            "host": host if default_port else f"{host}:{self._port}",
            "user-agent": f"interference/{__version__}",
            "accept-encoding": "identity",
            **{k.lower(): v for k, v in headers.items()},
        }
        _check_header_values(self._headers.values())
        self._connect_timeout = connect_timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._stats = PoolStats(max_connections, pool_timeout)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._heads: dict[tuple[Any, ...], bytes] = {}  # request heads already rendered

    def _request(
        self,
        method: str,
        path: str,
        content: Content,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
    ) -> tuple[bytes, BodyStream | None]:
        """The request's bytes up to its body, and the body when it is an upload (written
        as it is read, after them)."""
        key = (
            method,
            path,
            tuple(headers.items()) if headers else (),
            params and tuple(params.items()),
        )
        head = self._heads.get(key)
        if head is None:
            head = self._head(method, path, headers, params)
            if len(self._heads) < 64:  # providers send a handful of distinct heads
                self._heads[key] = head
        trace = UPSTREAM_TRACE.get()  # the attempt span's traceparent, when tracing
        if trace:
            head += "".join(f"{name}: {value}\r\n" for name, value in trace).encode("latin-1")
        if isinstance(content, bytes):
            return head + b"content-length: %d\r\n\r\n" % len(content) + content, None
        framing = b"content-type: %s\r\ncontent-length: %d\r\n\r\n"
        return head + framing % (content.content_type.encode("latin-1"), content.length), content

    def _head(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
    ) -> bytes:
        """The request line and headers, less the content length."""
        target, fields = request_target(self._prefix, self._headers, path, headers, params)
        lines = [f"{method} {target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in fields.items() if name not in _FRAMING]
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError:
            raise TimeoutError(f"no connection within {self._connect_timeout:g} s") from None
        except OSError as exc:
            raise ConnectError(exc.errno, f"{self._host}:{self._port}: {exc}") from exc
        self._open.add(connection)
        return connection

    def _idle_connection(self) -> _Connection | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            connection = self._idle.pop()
            if not connection.broken and now - connection.idle_since < _KEEPALIVE_S:
                return connection
            self._discard(connection)
        return None

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    def _release(self, connection: _Connection) -> None:
        """Back to the pool when its answer was read to the end, else closed."""
        self._slots.release()
        self._stats.in_use -= 1
        if connection.broken or not connection.complete or connection.error is not None:
            self._discard(connection)
            return
        connection.clear()
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.append(connection)

    async def _wait_for_slot(self) -> None:
        """Every connection is in use: wait for one, at most ``pool_timeout`` seconds."""
        stats = self._stats
        loop = asyncio.get_running_loop()
        began = loop.time()
        stats.waiting += 1
        try:
            async with asyncio.timeout(stats.pool_timeout):
                await self._slots.acquire()
        except TimeoutError:
            stats.refused += 1
            raise PoolFullError(stats.max_connections, loop.time() - began) from None
        finally:
            stats.waiting -= 1
            waited = loop.time() - began
            stats.waited += 1
            stats.wait_seconds += waited
            holder = POOL_WAIT.get()
            if holder is not None:
                holder.seconds += waited

    async def _send(self, request: tuple[bytes, BodyStream | None]) -> _Connection:
        """Write the request and wait for the answer's head; holds a pool slot."""
        start, upload = request
        if self._slots.locked():
            await self._wait_for_slot()
        else:
            await self._slots.acquire()  # free: it does not wait
        self._stats.in_use += 1
        try:
            for _ in range(2):
                connection = self._idle_connection()
                reused = connection is not None
                if connection is None:
                    connection = await self._connect()
                assert connection.transport is not None
                try:
                    connection.transport.write(start)
                    if upload is not None:
                        await connection.write_body(upload)
                    await connection.read_head()
                    return connection
                except OSError:
                    self._discard(connection)
                    if not reused or connection.received:
                        raise
                    # the upstream had closed this idle connection: once more, on a new one
                except BaseException:  # a malformed head, or cancelled while waiting for it
                    self._discard(connection)
                    raise
            raise AssertionError("unreachable")
        except BaseException:
            self._slots.release()
            self._stats.in_use -= 1
            raise

    async def post(
        self,
        path: str,
        *,
        content: Content,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> FastResponse:
        """POST and read the whole answer."""
        connection = await self._send(self._request("POST", path, content, headers, params))
        try:
            response = FastResponse(connection)
            await response.aread()
            return response
        finally:
            self._release(connection)

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        content: Content,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> AsyncIterator[FastResponse]:
        """Send a request and hand over the answer with its body unread; leaving the context
        before the body's end closes the connection (the upstream sees it)."""
        connection = await self._send(self._request(method, path, content, headers, params))
        try:
            yield FastResponse(connection)
        finally:
            self._release(connection)

    def pool(self) -> PoolStats:
        stats = self._stats
        stats.open = len(self._open)
        return stats

    async def aclose(self) -> None:
        for connection in list(self._open):
            self._discard(connection)
        self._idle.clear()
