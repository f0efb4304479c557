"""An :class:`~interference.upstream.client.UpstreamClient` that answers from a function, for
testing a provider's translation without sockets.

    client = MockClient(lambda request: MockAnswer(200, body=b'{"id": "x", ...}'))
    provider = OpenAIProvider("up", config, client=client)

Every request is kept in :attr:`MockClient.requests`. An answer's body is bytes, read as one
block, or a list of blocks, read one by one (a stream arriving in pieces); a handler that raises
makes the call raise as a failing connection would.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import orjson

from interference.telemetry.propagation import UPSTREAM_TRACE
from interference.upstream.client import Content, ReadAnswer, read_all


@dataclass
class MockRequest:
    method: str
    path: str
    headers: dict[str, str]
    params: dict[str, str]
    content: bytes

    def json(self) -> object:
        return orjson.loads(self.content)


@dataclass
class MockAnswer:
    status_code: int = 200
    body: bytes | list[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[MockRequest], MockAnswer | Awaitable[MockAnswer]]


class MockResponse(ReadAnswer):
    """A :class:`MockAnswer` as an :class:`~interference.upstream.client.UpstreamResponse`."""

    def __init__(self, answer: MockAnswer) -> None:
        self.status_code = answer.status_code
        self.headers: Mapping[str, str] = {k.lower(): v for k, v in answer.headers.items()}
        body = answer.body
        self._blocks = [body] if isinstance(body, bytes) else list(body)
        self._content: bytes | None = None
        self.closed = False

    async def aread(self) -> bytes:
        if self._content is None:
            self._content = b"".join([block async for block in self.iter_blocks()])
        return self._content

    async def iter_blocks(self) -> AsyncGenerator[bytes, None]:
        while self._blocks and not self.closed:
            yield self._blocks.pop(0)

    def close(self) -> None:
        self.closed = True

    async def drain(self, seconds: float = 1.0) -> None:
        self._blocks.clear()


class MockClient:
    """Answers each request with ``handler(request)``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[MockRequest] = []
        self.closed = False

    async def _answer(
        self,
        method: str,
        path: str,
        content: Content,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
    ) -> MockResponse:
        sent = {**(headers or {}), **dict(UPSTREAM_TRACE.get())}  # + traceparent, as the others
        if not isinstance(content, bytes):
            sent["content-type"] = content.content_type
        request = MockRequest(method, path, sent, dict(params or {}), await read_all(content))
        self.requests.append(request)
        answer = self.handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        return MockResponse(answer)

    async def post(
        self,
        path: str,
        *,
        content: Content,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> MockResponse:
        response = await self._answer("POST", path, content, headers, params)
        await response.aread()
        return response

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        content: Content,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> AsyncIterator[MockResponse]:
        response = await self._answer(method, path, content, headers, params)
        try:
            yield response
        finally:
            response.close()

    def pool(self) -> None:
        return None  # no connections

    async def aclose(self) -> None:
        self.closed = True
