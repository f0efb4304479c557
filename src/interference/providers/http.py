"""What every HTTP provider shares: a pooled client, SSE parsing, and error mapping.

Upstream failures become :mod:`interference.errors` exceptions whose ``retryable`` flag tells the
router whether another attempt may succeed: refusals, resets, timeouts, 5xx, 429 and 401/403 (a
deployment's own credentials) are retryable; 400, 404, 413 and 422 are the request's own fault and
go back to the client as they are.

An SSE event is bounded: one whose bytes reach past ``_MAX_EVENT`` (an upstream that never sends
the blank line ending an event, or one huge event) fails the stream with the transport's
:class:`~interference.providers.transport.ProtocolError`, a malformed upstream answer (502).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any

import orjson

from interference.config import RemoteProviderConfig
from interference.errors import (
    ContextLengthExceededError,
    InterferenceError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    RequestTooLargeError,
    UpstreamError,
    UpstreamTimeoutError,
)
from interference.providers.base import Provider, ServedModel
from interference.providers.transport import (
    ConnectError,
    ProtocolError,
    UpstreamClient,
    UpstreamResponse,
)

_MAX_EVENT = 8 << 20  # bytes of one SSE event (what is pending of it included)


def make_client(config: RemoteProviderConfig, headers: dict[str, str]) -> UpstreamClient:
    """One pooled keep-alive client per provider."""
    return UpstreamClient(
        config.base_url,
        {**headers, **config.headers},
        max_connections=config.max_connections,
        connect_timeout=config.timeouts.connect,
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# How OpenAI, Anthropic, Gemini and llama.cpp-style servers say a prompt does not fit.
_CONTEXT_OVERFLOW = re.compile(
    r"context_length_exceeded|maximum context length|prompt is too long|exceeds the "
    r"(?:available )?context|input token count .* exceeds",
    re.IGNORECASE,
)


def _upstream_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip() or "no detail"
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return "no detail"


def error_from_status(
    provider: str, status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> InterferenceError:
    """The exception for an upstream's non-2xx answer."""
    detail = _upstream_message(body)
    message = f"{provider}: upstream answered {status}: {detail}"
    if status == 400 and _CONTEXT_OVERFLOW.search(detail + body[:2000].decode("utf-8", "replace")):
        return ContextLengthExceededError(message, param="messages")
    if status in (400, 422):
        return InvalidRequestError(message)
    if status == 404:
        return NotFoundError(message, code="model_not_found")
    if status == 413:
        return RequestTooLargeError(message)
    if status == 429:
        retry_after = parse_retry_after(headers.get("retry-after") if headers else None)
        return RateLimitError(message, retry_after=retry_after)
    if status in (401, 403):
        return UpstreamError(message, code="upstream_auth_error")
    if status in (408, 504):
        return UpstreamTimeoutError(message)
    return UpstreamError(message)


def error_from_exception(provider: str, exc: Exception) -> InterferenceError:
    """The exception for a transport failure (refused, reset, timed out, broken stream)."""
    if isinstance(exc, TimeoutError):
        return UpstreamTimeoutError(f"{provider}: {type(exc).__name__} talking to the upstream")
    if isinstance(exc, ConnectError):
        return UpstreamError(f"{provider}: cannot connect to the upstream ({exc.strerror})")
    if isinstance(exc, OSError):
        return UpstreamError(f"{provider}: the upstream connection failed ({type(exc).__name__})")
    if isinstance(exc, (orjson.JSONDecodeError, ValueError, KeyError, TypeError)):
        return UpstreamError(f"{provider}: malformed upstream response ({type(exc).__name__})")
    return UpstreamError(f"{provider}: upstream failure ({type(exc).__name__})")


async def check_status(provider: str, response: UpstreamResponse) -> None:
    """Raise the mapped error unless the (streamed) response is a 2xx."""
    if response.is_success:
        return
    body = await response.aread()
    raise error_from_status(provider, response.status_code, body, response.headers)


class SSEDecoder:
    """Incremental server-sent events parser: feed it the body as it arrives, get back the
    ``data`` payload of every event completed so far (multi-line data joined by ``\\n``).

    An event of more than ``_MAX_EVENT`` bytes, complete or still pending, raises
    :class:`~interference.providers.transport.ProtocolError`."""

    def __init__(self) -> None:
        self._pending = b""
        self._started = False

    def feed(self, block: bytes) -> list[bytes]:
        buffer = self._pending + block if self._pending else block
        if not self._started and buffer:
            if len(buffer) < 3 and b"\xef\xbb\xbf".startswith(buffer):
                self._pending = buffer  # maybe the start of a byte order mark
                return []
            buffer = buffer.removeprefix(b"\xef\xbb\xbf")
            self._started = True
        if b"\r" in buffer:
            held = b""
            if buffer.endswith(b"\r"):  # its \n may be in the next block
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + held
        *events, self._pending = buffer.split(b"\n\n")
        if len(buffer) > _MAX_EVENT and max(map(len, [self._pending, *events])) > _MAX_EVENT:
            self._pending = b""
            raise ProtocolError(f"an SSE event of the upstream exceeds {_MAX_EVENT} bytes")
        out: list[bytes] = []
        for raw in events:
            if raw.startswith(b"data: ") and b"\n" not in raw and len(raw) > 6:
                out.append(raw[6:])  # the usual one-line event
            else:
                data = _event_data(raw)
                if data is not None:
                    out.append(data)
        return out

    def close(self) -> bytes | None:
        """The data of an event the stream ended in without its blank line, if any."""
        pending, self._pending = self._pending.replace(b"\r", b""), b""
        return _event_data(pending)


def _event_data(raw: bytes) -> bytes | None:
    data: list[bytes] = []
    for line in raw.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if field == b"data":
            data.append(value.removeprefix(b" "))
    joined = b"\n".join(data)
    return joined or None  # an empty data buffer dispatches nothing


async def sse_batches(response: UpstreamResponse) -> AsyncGenerator[list[bytes], None]:
    """The ``data`` payloads of a server-sent event stream, grouped by the read that
    completed them (the events that arrived together)."""
    decoder = SSEDecoder()
    try:
        async for block in response.iter_blocks():
            events = decoder.feed(block)
            if events:
                yield events
    except ProtocolError:
        response.close()  # an event too large: the rest of the body is not read
        raise
    tail = decoder.close()
    if tail is not None:
        yield [tail]


async def sse_data(response: UpstreamResponse) -> AsyncGenerator[bytes, None]:
    """The ``data`` payloads of a server-sent event stream, one per event."""
    async with aclosing(sse_batches(response)) as batches:
        async for events in batches:
            for data in events:
                yield data


def json_object(raw: bytes) -> dict[str, Any]:
    """Parse a JSON object, raising ``ValueError`` for anything else."""
    data = orjson.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


class HTTPProvider(Provider):
    """Base of the providers that talk to an HTTP API through one pooled client."""

    def __init__(self, name: str, config: RemoteProviderConfig) -> None:
        super().__init__(name)
        self.config = config
        self._client: UpstreamClient | None = None

    def auth_headers(self) -> dict[str, str]:
        """Headers carrying the credentials (the key never goes into a URL)."""
        return {}

    def models(self) -> list[ServedModel]:
        return []  # public models come from the configuration

    async def start(self) -> None:
        self._client = make_client(self.config, self.auth_headers())

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def client(self) -> UpstreamClient:
        if self._client is None:
            raise UpstreamError(f"{self.name}: provider is not started")
        return self._client

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "base_url": self.config.base_url}
