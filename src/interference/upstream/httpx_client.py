"""An :class:`~interference.upstream.client.UpstreamClient` over httpx: for upstreams reached
through a proxy or served with a certificate of a private authority.

The fast client (:mod:`interference.upstream.fast`) costs a seventh of httpx's CPU per call
(bench/README.md, "Gateway overhead"), but it speaks to the base URL directly and trusts the
system's certificates only. A provider with ``client: httpx`` (the default when it sets
``proxy`` or ``ca_bundle``) goes through this one instead, which also honours the standard
environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``, ``SSL_CERT_FILE``).

What the fast client guarantees holds here too: no redirects, no compression, the connect
timeout only (the router bounds the rest), a response head or a body read whole over its bound
fails with :class:`~interference.upstream.client.ProtocolError`, and transport failures are the
fast client's kinds (:class:`~interference.upstream.client.ConnectError`, ``TimeoutError``,
``OSError``), so the error mapping (:mod:`interference.upstream.errors`) treats both alike.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Literal

import httpx

from interference import __version__
from interference.telemetry.propagation import UPSTREAM_TRACE
from interference.upstream.client import (
    ConnectError,
    Content,
    PoolFullError,
    PoolStats,
    ProtocolError,
    ReadAnswer,
)


@contextmanager
def _as_transport_errors() -> Iterator[None]:
    """httpx's exceptions as the kinds the fast client raises."""
    try:
        yield
    except httpx.ConnectTimeout as exc:
        raise TimeoutError(f"no connection in time ({type(exc).__name__})") from exc
    except httpx.TimeoutException as exc:
        raise TimeoutError(type(exc).__name__) from exc
    except (httpx.ConnectError, httpx.ProxyError, httpx.UnsupportedProtocol) as exc:
        raise ConnectError(None, str(exc) or type(exc).__name__) from exc
    except (httpx.RemoteProtocolError, httpx.DecodingError) as exc:
        raise ProtocolError(f"invalid HTTP from the upstream: {exc}") from exc
    except httpx.TransportError as exc:  # read and write errors: the connection broke
        raise ConnectionError(str(exc) or type(exc).__name__) from exc


class HttpxResponse(ReadAnswer):
    """An httpx answer (:class:`~interference.upstream.client.UpstreamResponse`)."""

    def __init__(self, response: httpx.Response, content: bytes | None = None) -> None:
        self._response = response
        self.status_code = response.status_code
        self.headers: Mapping[str, str] = response.headers  # looked up case-insensitively
        self._content = content
        self._raw: AsyncIterator[bytes] | None = None  # the body, for aread

    async def _next_block(self) -> bytes | None:
        if self._raw is None:
            self._raw = self._response.aiter_raw()
        with _as_transport_errors():
            return await anext(self._raw, None)

    async def iter_blocks(self) -> AsyncGenerator[bytes, None]:
        with _as_transport_errors():
            async for block in self._response.aiter_raw():
                yield block

    def close(self) -> None:
        """Leaving :meth:`HttpxClient.stream`'s context closes the response: an unread one is
        not put back into the pool."""

    async def drain(self, seconds: float = 1.0) -> None:
        """Nothing to do: httpx reads a finished stream's end when its context closes."""


class HttpxClient:
    """A base URL, default headers and httpx's connection pool
    (:class:`~interference.upstream.client.UpstreamClient`)."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        max_connections: int,
        connect_timeout: float,
        pool_timeout: float = 1.0,
        proxy: str | None = None,
        ca_bundle: str | None = None,
        http2: Literal["auto", "always", "never"] = "never",
    ) -> None:
        """``http2``: auto negotiates it by ALPN on https (httpx's own way), always speaks it
        only (h2c with prior knowledge on http://), never speaks HTTP/1.1."""
        verify: ssl.SSLContext | bool = True
        if ca_bundle is not None:
            verify = ssl.create_default_context(cafile=ca_bundle)
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers={
                "user-agent": f"interference/{__version__}",
                "accept-encoding": "identity",
                **headers,
            },
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            timeout=httpx.Timeout(None, connect=connect_timeout, pool=pool_timeout),
            proxy=proxy,
            verify=verify,
            http1=http2 != "always",
            http2=http2 != "never",
            trust_env=True,
            follow_redirects=False,
        )
        # httpx's pool keeps its own count of connections; this one counts requests in use and
        # refused (the time spent waiting for a connection is not told apart from the rest)
        self._stats = PoolStats(max_connections, pool_timeout)
        if http2 == "always":
            self._stats.protocol = "HTTP/2"

    async def post(
        self,
        path: str,
        *,
        content: Content,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> HttpxResponse:
        async with self.stream("POST", path, content=content, headers=headers, params=params) as r:
            await r.aread()
            return r

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        content: Content,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> AsyncIterator[HttpxResponse]:
        framing: dict[str, str] = {}
        body: bytes | AsyncIterator[bytes]
        if isinstance(content, bytes):
            body = content
        else:  # an upload, sent as it is read
            body = content.pieces()
            framing = {"content-type": content.content_type, "content-length": str(content.length)}
        request = self._client.build_request(
            method,
            path,  # httpx joins it under the base URL's path (``/v1`` + ``/chat/completions``)
            content=body,
            headers={**(headers or {}), **framing, **dict(UPSTREAM_TRACE.get())},  # + traceparent
            params=dict(params or {}),
        )
        stats = self._stats
        with _as_transport_errors():
            try:
                response = await self._client.send(request, stream=True)
            except httpx.PoolTimeout:
                stats.refused += 1
                raise PoolFullError(stats.max_connections, stats.pool_timeout) from None
        stats.in_use += 1
        stats.protocol = response.http_version  # what the last connection negotiated
        try:
            yield HttpxResponse(response)
        finally:
            stats.in_use -= 1
            await response.aclose()

    def pool(self) -> PoolStats:
        return self._stats

    async def aclose(self) -> None:
        await self._client.aclose()
