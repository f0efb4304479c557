"""The HTTP client every remote provider talks through: one pooled aiohttp session each.

httpx was the first choice; under concurrency its connection pool scans every pooled
connection (and polls its socket) for each request, which cost interference 12.9 s of 25.7 s
of CPU in a 16-way profile (bench/README.md, "Gateway overhead"). aiohttp's connector does not.

Only the connect timeout is the client's: time to first token, idle gaps and the total are
enforced by the router for every provider kind alike. Proxies from the environment are never
used (``trust_env`` off), so a request can only reach the configured base URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aiohttp


class UpstreamResponse:
    """The few things providers read from an upstream answer."""

    def __init__(self, response: aiohttp.ClientResponse, content: bytes | None = None) -> None:
        self._response = response
        self.status_code = response.status
        self.headers: Mapping[str, str] = response.headers
        self._content = content

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise RuntimeError("the body of a streamed response is read with aread()")
        return self._content

    async def aread(self) -> bytes:
        if self._content is None:
            self._content = await self._response.read()
        return self._content

    async def drain(self, seconds: float = 1.0) -> None:
        """Read what is left of the body (an SSE stream's end after ``[DONE]``) so the
        connection goes back to the pool instead of being closed; bounded in time."""
        try:
            async with asyncio.timeout(seconds):
                await self._response.read()
        except (TimeoutError, aiohttp.ClientError):
            pass

    def iter_blocks(self) -> AsyncIterator[bytes]:
        """The body in the pieces it arrives in (whatever the socket had, any size)."""
        return self._response.content.iter_any()


class UpstreamClient:
    """A base URL, default headers and a keep-alive connection pool."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        max_connections: int,
        connect_timeout: float,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            headers=dict(headers),
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=connect_timeout, sock_connect=connect_timeout
            ),
            trust_env=False,
        )

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def post(
        self,
        path: str,
        *,
        content: bytes,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> UpstreamResponse:
        """POST and read the whole answer."""
        async with self._session.post(
            self._url(path), data=content, headers=headers, params=params
        ) as response:
            return UpstreamResponse(response, await response.read())

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        content: bytes,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> AsyncIterator[UpstreamResponse]:
        """Send a request and hand over the answer with its body unread; closing the
        context closes the connection of an unfinished answer (the upstream sees it)."""
        async with self._session.request(
            method, self._url(path), data=content, headers=headers, params=params
        ) as response:
            yield UpstreamResponse(response)

    async def aclose(self) -> None:
        await self._session.close()
