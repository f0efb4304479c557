"""``http2: auto`` for an https upstream: HTTP/2 when its TLS handshake agrees to it, else
HTTP/1.1.

The first request opens a connection offering ``h2`` and ``http/1.1`` by ALPN. If the upstream
picks ``h2``, that connection stays in the HTTP/2 pool and every request of this client goes
through :class:`~interference.upstream.http2.Http2Client` from then on; otherwise it is closed
and every request goes through :class:`~interference.upstream.fast.FastClient`. The choice is
made once per client (each provider, in each worker process), since an upstream's servers
speak what they speak: a connection failure leaves it unmade, for the next request to try. Its
cost is one TLS handshake more, once, where the upstream speaks HTTP/1.1 only.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from interference.upstream.client import Content, PoolStats, UpstreamClient, UpstreamResponse
from interference.upstream.fast import FastClient
from interference.upstream.http2 import Http2Client

#: what ``/v1/providers`` shows as the protocol before the first connection decided it
UNDECIDED = "HTTP/2 or HTTP/1.1, by ALPN at the first connection"


class NegotiatedClient:
    """HTTP/2 or HTTP/1.1, as the first TLS handshake decides
    (:class:`~interference.upstream.client.UpstreamClient`)."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        max_connections: int,
        connect_timeout: float,
        pool_timeout: float = 1.0,
        ssl_context: Callable[[], ssl.SSLContext] = ssl.create_default_context,
    ) -> None:
        """``ssl_context`` makes a context for each of its two clients (the HTTP/2 one sets
        its ALPN protocols, which the HTTP/1.1 one must not offer)."""
        if not base_url.startswith("https://"):
            raise ValueError(f"ALPN needs an https URL, not {base_url!r}")
        self._http2 = Http2Client(
            base_url,
            headers,
            max_connections=max_connections,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
            ssl_context=ssl_context(),
            http1_fallback=True,
        )
        self._http1 = FastClient(
            base_url,
            headers,
            max_connections=max_connections,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
            ssl_context=ssl_context(),
        )
        self._chosen: UpstreamClient | None = None
        self._choosing: asyncio.Lock | None = None

    async def _client(self) -> UpstreamClient:
        if self._chosen is not None:
            return self._chosen
        if self._choosing is None:
            self._choosing = asyncio.Lock()
        async with self._choosing:  # a burst of first requests: one handshake decides
            if self._chosen is None:
                self._chosen = self._http2 if await self._http2.negotiate() else self._http1
        return self._chosen

    async def post(
        self,
        path: str,
        *,
        content: Content,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> UpstreamResponse:
        client = self._chosen or await self._client()
        return await client.post(path, content=content, headers=headers, params=params)

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        content: Content,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> AsyncIterator[UpstreamResponse]:
        client = self._chosen or await self._client()
        async with client.stream(
            method, path, content=content, headers=headers, params=params
        ) as response:
            yield response

    def pool(self) -> PoolStats:
        if self._chosen is not None:
            pool = self._chosen.pool()
            assert pool is not None
            return pool
        stats = self._http2.pool()
        return PoolStats(stats.max_connections, stats.pool_timeout, protocol=UNDECIDED)

    async def aclose(self) -> None:
        await self._http2.aclose()
        await self._http1.aclose()
