"""The HTTP/2 client, for upstreams that speak it: many streams share one connection.

It implements :class:`~interference.upstream.client.UpstreamClient` as
:class:`~interference.upstream.fast.FastClient` does, with the same bounds (a response head over
64 KiB or a body read whole over 64 MiB is a :class:`ProtocolError`; only the connect timeout is
the client's) and the same headers (``accept-encoding: identity``, its ``user-agent``, the
attempt's ``traceparent``). What differs is the pool:

- A connection carries up to the peer's ``SETTINGS_MAX_CONCURRENT_STREAMS`` streams at once,
  256 at most (the frames: :mod:`interference.upstream.http2_connection`). A request takes a
  free stream slot on the oldest connection that has one; when none has, another connection is
  opened, up to ``max_connections``; requests that arrive while it opens count on it (as many as
  the last connection allowed; all of them at the first), so a burst opens as few connections as
  it needs. With ``max_connections`` open and every slot taken, a request waits at most
  ``pool_timeout`` seconds for one, then fails with :class:`PoolFullError`, exactly as over
  HTTP/1.1; ``PoolStats.in_use`` counts streams, ``open`` connections.
- A stream the upstream did not process (GOAWAY, REFUSED_STREAM), or sent on a reused connection
  that died before anything came back, is sent once more on another connection.
- Leaving :meth:`Http2Client.stream` before the body's end resets that stream (CANCEL): the
  upstream sees the client went away, and the connection goes on carrying the others. For the
  same reason an answer's ``close()`` resets its stream, not the connection.
- ``https://`` URLs offer ``h2`` by ALPN (with ``http/1.1`` too when ``http1_fallback``: then a
  server that picks HTTP/1.1 raises :class:`Http1ChosenError`, for
  :class:`~interference.upstream.negotiated.NegotiatedClient` to switch). ``http://`` URLs speak
  h2c with prior knowledge: only for upstreams configured so, since an HTTP/1.1 server would
  not understand it.
- A connection with no stream for ``_KEEPALIVE_S`` is closed (GOAWAY) when the pool next looks
  at it.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import h2.exceptions

from interference import __version__
from interference.telemetry.propagation import UPSTREAM_TRACE
from interference.upstream.client import (
    POOL_WAIT,
    ConnectError,
    Content,
    PoolFullError,
    PoolStats,
    ProtocolError,
)
from interference.upstream.fast import _KEEPALIVE_S, _check_header_values, request_target
from interference.upstream.http2_connection import (
    Http1ChosenError,
    Http2Connection,
    Http2Response,
    Stream,
    StreamRefusedError,
)

__all__ = ["Http1ChosenError", "Http2Client", "Http2Response"]

Fields = list[tuple[bytes, bytes]]

#: headers HTTP/2 forbids (RFC 9113 §8.2.2) or carries otherwise (``host``: ``:authority``)
_NOT_SENT = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host"}
    | {"content-length", "te"}
)


def _length(content: Content) -> int:
    return len(content) if isinstance(content, bytes) else content.length


@dataclass(slots=True)
class _Opening:
    """A connection being opened, and how many requests count on it."""

    done: asyncio.Future[Http2Connection]
    counting: int = 0


class Http2Client:
    """A base URL, default headers and a pool of multiplexed HTTP/2 connections
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
        http1_fallback: bool = False,
    ) -> None:
        """``ssl_context`` defaults to the system's trusted certificates (https only); its ALPN
        protocols are set here. ``http1_fallback``: offer ``http/1.1`` too (see
        :class:`Http1ChosenError`)."""
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._prefix = url.path.rstrip("/")
        self._ssl = None
        if url.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
            self._ssl.set_alpn_protocols(["h2", "http/1.1"] if http1_fallback else ["h2"])
        default_port = self._port == (443 if url.scheme == "https" else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        authority = host if default_port else f"{host}:{self._port}"
        self._pseudo = [(b":scheme", url.scheme.encode()), (b":authority", authority.encode())]
        self._headers = {
            "user-agent": f"interference/{__version__}",
            "accept-encoding": "identity",
            **{k.lower(): v for k, v in headers.items()},
        }
        _check_header_values(self._headers.values())
        self._http1_fallback = http1_fallback
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._stats = PoolStats(max_connections, pool_timeout, protocol="HTTP/2")
        self._connections: list[Http2Connection] = []  # settled, oldest first
        self._opening: list[_Opening] = []
        self._connecting: set[asyncio.Task[Http2Connection]] = set()
        self._waiters: deque[asyncio.Future[Http2Connection]] = deque()  # for a free slot
        self._guess: int | None = None  # streams the last connection allowed (None: none yet)
        self._fields: dict[tuple[Any, ...], Fields] = {}  # request heads already rendered

    # --- requests

    def _request_fields(
        self,
        method: str,
        path: str,
        content: Content,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
    ) -> Fields:
        key = (
            method,
            path,
            tuple(headers.items()) if headers else (),
            params and tuple(params.items()),
        )
        fields = self._fields.get(key)
        if fields is None:
            fields = self._render(method, path, headers, params)
            if len(self._fields) < 64:  # providers send a handful of distinct heads
                self._fields[key] = fields
        fields = [*fields, (b"content-length", b"%d" % _length(content))]
        trace = UPSTREAM_TRACE.get()  # the attempt span's traceparent, when tracing
        if trace:
            fields += [(name.lower().encode(), value.encode()) for name, value in trace]
        return fields

    def _render(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
    ) -> Fields:
        """The pseudo-headers and headers, less the content length."""
        target, values = request_target(self._prefix, self._headers, path, headers, params)
        fields = [(b":method", method.encode()), *self._pseudo, (b":path", target.encode())]
        fields += [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in values.items()
            if name not in _NOT_SENT
        ]
        return fields

    async def _open(self, fields: Fields, content: Content) -> tuple[Http2Connection, Stream]:
        """Send a request and wait for its answer's head; holds a stream slot."""
        for attempt in range(2):
            connection = await self._slot()
            seen = connection.received
            reused = connection.served > 0
            connection.served += 1
            try:
                stream = connection.open_stream(fields, _length(content) > 0)
            except h2.exceptions.TooManyStreamsError:  # the peer lowered its limit meanwhile
                self._unreserve(connection)
                if attempt:
                    raise ProtocolError("the upstream takes no new stream") from None
                continue
            except h2.exceptions.ProtocolError as exc:  # a header HTTP/2 cannot carry
                self._unreserve(connection)
                raise ProtocolError(f"the request cannot be sent over HTTP/2: {exc}") from exc
            try:
                if isinstance(content, bytes):
                    if content:
                        await connection.send_body(stream, content)
                elif content.length:  # an upload, read again from its start for each attempt
                    async for piece in content.pieces():
                        await connection.send_body(stream, piece, end=False)
                    await connection.send_body(stream, b"")
                while not stream.status:
                    if stream.error is not None:
                        raise stream.error
                    await stream.wait()
                return connection, stream
            except StreamRefusedError:
                self._finish(connection, stream)
                if attempt:
                    raise
                # not processed by the upstream: once more, on another connection
            except OSError:
                self._finish(connection, stream)
                if attempt or not reused or connection.received != seen:
                    raise
                # the upstream had closed this reused connection: once more, on a new one
            except BaseException:
                self._finish(connection, stream)
                raise
        raise AssertionError("unreachable")

    async def post(
        self,
        path: str,
        *,
        content: Content,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Http2Response:
        """POST and read the whole answer."""
        fields = self._request_fields("POST", path, content, headers, params)
        connection, stream = await self._open(fields, content)
        try:
            response = Http2Response(connection, stream, self._finish)
            await response.aread()
            return response
        finally:
            self._finish(connection, stream)

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        content: Content,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Http2Response]:
        """Send a request and hand over the answer with its body unread; leaving the context
        before the body's end resets the stream (the upstream sees it)."""
        fields = self._request_fields(method, path, content, headers, params)
        connection, stream = await self._open(fields, content)
        try:
            yield Http2Response(connection, stream, self._finish)
        finally:
            self._finish(connection, stream)

    # --- the pool: stream slots on connections

    def _free_connection(self) -> Http2Connection | None:
        """The oldest connection with a free stream slot; connections that can take no new
        stream and carry none, or idle too long, are closed on the way."""
        now = asyncio.get_running_loop().time()
        found = None
        for connection in list(self._connections):
            if connection.reserved == 0 and (
                connection.capacity == 0 or now - connection.idle_since > _KEEPALIVE_S
            ):
                self._drop(connection)
            elif found is None and connection.reserved < connection.capacity:
                found = connection
        return found

    def _reserve(self, connection: Http2Connection) -> Http2Connection:
        connection.reserved += 1
        self._stats.in_use += 1
        return connection

    def _unreserve(self, connection: Http2Connection) -> None:
        connection.reserved -= 1
        self._stats.in_use -= 1
        if connection.reserved == 0:
            connection.idle_since = asyncio.get_running_loop().time()
        self._changed(connection)

    def _finish(self, connection: Http2Connection, stream: Stream) -> None:
        """Done with ``stream`` (ended, or given up: then reset); its slot comes free."""
        if stream.id not in connection.streams:
            return  # finished already (an answer closed, then its context left)
        connection.reserved -= 1
        self._stats.in_use -= 1
        if connection.reserved == 0:
            connection.idle_since = asyncio.get_running_loop().time()
        connection.release(stream)  # calls _changed

    def _drop(self, connection: Http2Connection, *, at_once: bool = False) -> None:
        if connection in self._connections:
            self._connections.remove(connection)
        connection.close(at_once=at_once)

    def _changed(self, connection: Http2Connection) -> None:
        """A connection can take more streams, or fewer: hand free slots to waiting requests."""
        if connection.lost and connection in self._connections:
            self._connections.remove(connection)
        if connection.capacity:
            self._guess = connection.capacity
        waiters = self._waiters
        while waiters:
            if waiters[0].done():  # given up (timed out, cancelled)
                waiters.popleft()
                continue
            free = self._free_connection()
            if free is None:
                break
            waiters.popleft().set_result(self._reserve(free))
        if waiters and not self._opening and self._room():
            self._start_connect()  # a connection went: the waiting requests may have another

    def _room(self) -> bool:
        return len(self._connections) + len(self._opening) < self._max_connections

    async def _slot(self) -> Http2Connection:
        """A connection with a stream slot reserved for the caller."""
        for _ in range(3):  # each pass takes a slot, or waits for a connection being opened
            if self._waiters:  # those waiting already go first
                break
            connection = self._free_connection()
            if connection is not None:
                return self._reserve(connection)
            guess = self._guess
            opening = next((o for o in self._opening if guess is None or o.counting < guess), None)
            if opening is None and self._room():
                opening = self._start_connect()
            if opening is None:
                break
            opening.counting += 1
            await asyncio.shield(opening.done)  # its failure is this request's
        return await self._wait_for_slot()

    async def _wait_for_slot(self) -> Http2Connection:
        """Every slot of ``max_connections`` connections is taken: wait for one, at most
        ``pool_timeout`` seconds."""
        stats = self._stats
        loop = asyncio.get_running_loop()
        began = loop.time()
        waiter: asyncio.Future[Http2Connection] = loop.create_future()
        self._waiters.append(waiter)
        stats.waiting += 1
        try:
            async with asyncio.timeout(stats.pool_timeout):
                return await waiter
        except TimeoutError:
            stats.refused += 1
            raise PoolFullError(stats.max_connections, loop.time() - began) from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():  # handed a slot just too late
                self._unreserve(waiter.result())
            raise
        finally:
            stats.waiting -= 1
            waited = loop.time() - began
            stats.waited += 1
            stats.wait_seconds += waited
            holder = POOL_WAIT.get()
            if holder is not None:
                holder.seconds += waited

    # --- connections

    def _start_connect(self) -> _Opening:
        loop = asyncio.get_running_loop()
        opening = _Opening(loop.create_future())
        self._opening.append(opening)
        task = loop.create_task(self._connect())
        self._connecting.add(task)
        task.add_done_callback(lambda done: self._opened(opening, done))
        return opening

    def _opened(self, opening: _Opening, task: asyncio.Task[Http2Connection]) -> None:
        self._connecting.discard(task)
        self._opening.remove(opening)
        error = task.exception() if not task.cancelled() else ConnectError(None, "client closed")
        if error is not None:
            opening.done.set_exception(error)
            opening.done.exception()  # retrieved: every request counting on it may be gone
        else:
            connection = task.result()
            if connection.lost:
                opening.done.set_exception(ConnectionResetError("the upstream closed at once"))
                opening.done.exception()
                return
            self._connections.append(connection)
            opening.done.set_result(connection)
            # after the requests that counted on it have taken their slots, the waiting ones
            asyncio.get_running_loop().call_soon(self._changed, connection)

    async def _connect(self) -> Http2Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: Http2Connection(self._changed),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
                try:
                    await connection.settled  # the peer's SETTINGS: how many streams it takes
                except BaseException:
                    connection.close()
                    raise
        except TimeoutError:
            raise TimeoutError(f"no connection within {self._connect_timeout:g} s") from None
        except Http1ChosenError as exc:
            if self._http1_fallback:
                raise
            raise ConnectError(
                None, f"{self._host}:{self._port} does not speak HTTP/2: {exc}"
            ) from None
        except ProtocolError:
            raise
        except OSError as exc:
            raise ConnectError(exc.errno, f"{self._host}:{self._port}: {exc}") from exc
        connection.idle_since = loop.time()
        return connection

    async def negotiate(self) -> bool:
        """Open the first connection: True if it speaks HTTP/2 (it stays in the pool), False
        if the upstream chose HTTP/1.1 by ALPN (it is closed). Connect failures raise."""
        opening = self._start_connect()
        try:
            await asyncio.shield(opening.done)
        except Http1ChosenError:
            return False
        return True

    def pool(self) -> PoolStats:
        stats = self._stats
        stats.open = len(self._connections)
        return stats

    async def aclose(self) -> None:
        for task in list(self._connecting):
            task.cancel()
        for connection in list(self._connections):
            self._drop(connection, at_once=True)
