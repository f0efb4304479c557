"""What every HTTP provider shares: its upstream client, started and closed with it, and JSON
parsing of upstream objects. The client, SSE decoding and error mapping live in
:mod:`interference.upstream`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import orjson

from interference.config import RemoteProviderConfig
from interference.errors import UpstreamError
from interference.providers.base import Provider, ServedModel
from interference.upstream.client import (
    Content,
    PoolStats,
    UpstreamClient,
    UpstreamResponse,
)
from interference.upstream.errors import check_status, upstream_errors
from interference.upstream.fast import FastClient
from interference.upstream.http2 import Http2Client
from interference.upstream.httpx_client import HttpxClient
from interference.upstream.negotiated import NegotiatedClient

T = TypeVar("T")
JSON = {"content-type": "application/json", "accept": "application/json"}
SSE = {"content-type": "application/json", "accept": "text/event-stream"}


def make_client(config: RemoteProviderConfig, headers: dict[str, str]) -> UpstreamClient:
    """One pooled keep-alive client per provider: httpx for a proxy or a private certificate
    authority (``client``, ``proxy``, ``ca_bundle``), else ours, over HTTP/2 or HTTP/1.1 as
    ``http2`` says."""
    headers = {**headers, **config.headers}
    if config.http_client == "httpx":
        return HttpxClient(
            config.base_url,
            headers,
            max_connections=config.max_connections,
            connect_timeout=config.timeouts.connect,
            pool_timeout=config.pool_timeout,
            proxy=config.proxy,
            ca_bundle=str(Path(config.ca_bundle).expanduser()) if config.ca_bundle else None,
            http2=config.http2,
        )
    client: type[FastClient | Http2Client | NegotiatedClient] = FastClient
    if config.http2 == "always":
        client = Http2Client
    elif config.http2 == "auto" and config.base_url.startswith("https://"):
        client = NegotiatedClient
    return client(
        config.base_url,
        headers,
        max_connections=config.max_connections,
        connect_timeout=config.timeouts.connect,
        pool_timeout=config.pool_timeout,
    )


def json_object(raw: bytes) -> dict[str, Any]:
    """Parse a JSON object, raising ``ValueError`` for anything else."""
    data = orjson.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


class HTTPProvider(Provider):
    """Base of the providers that talk to an HTTP API through one pooled client."""

    def __init__(
        self, name: str, config: RemoteProviderConfig, *, client: UpstreamClient | None = None
    ) -> None:
        """``client`` replaces the one the configuration asks for (tests pass a
        :class:`~interference.upstream.mock.MockClient`)."""
        super().__init__(name)
        self.config = config
        self._given = client
        self._client: UpstreamClient | None = None

    def auth_headers(self) -> dict[str, str]:
        """Headers carrying the credentials (the key never goes into a URL)."""
        return {}

    def models(self) -> list[ServedModel]:
        return []  # public models come from the configuration

    async def start(self) -> None:
        self._client = self._given or make_client(self.config, self.auth_headers())

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- the I/O every HTTP provider does, so that a provider's own module only translates

    async def post_json(
        self,
        path: str,
        body: bytes,
        parse: Callable[[dict[str, Any]], T],
        *,
        params: Mapping[str, str] | None = None,
    ) -> T:
        """POST a JSON ``body`` and ``parse`` the answer's JSON object. A refusal, a transport
        failure, a non-2xx status or an answer ``parse`` cannot read becomes the error the
        router knows (:mod:`interference.upstream.errors`)."""
        with upstream_errors(self.name):
            response = await self.client.post(path, content=body, headers=JSON, params=params)
            await check_status(self.name, response)
            return parse(json_object(response.content))

    @contextlib.asynccontextmanager
    async def open_stream(
        self,
        path: str,
        body: Content,
        *,
        headers: Mapping[str, str] = SSE,
        params: Mapping[str, str] | None = None,
    ) -> AsyncIterator[UpstreamResponse]:
        """POST ``body`` and hand over the (2xx) answer, its body unread; whatever fails inside
        the block, reading or translating, becomes the error the router knows, as in
        :meth:`post_json`. Leaving the block before the body's end closes the connection."""
        with upstream_errors(self.name):
            async with self.client.stream(
                "POST", path, content=body, headers=headers, params=params
            ) as response:
                await check_status(self.name, response)
                yield response

    @property
    def client(self) -> UpstreamClient:
        if self._client is None:
            raise UpstreamError(f"{self.name}: provider is not started")
        return self._client

    def pool(self) -> PoolStats | None:
        """Its upstream connection pool now (None before it starts, or with a mock)."""
        return None if self._client is None else self._client.pool()

    def describe(self) -> dict[str, Any]:
        pool = self.pool()
        described = {**super().describe(), "base_url": self.config.base_url}
        if pool is not None:
            described["connections"] = pool.as_dict()
        return described
