"""Upstream failures as :mod:`interference.errors` exceptions, in one place.

Their ``retryable`` flag tells the router whether another attempt may succeed: refusals,
resets, timeouts, 5xx, 429 and 401/403 (a deployment's own credentials) are retryable; 400, 404,
413 and 422 are the request's own fault and go back to the client as they are. Providers wrap
their I/O in :func:`upstream_errors` instead of each writing the same ``try``/``except``.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from types import TracebackType

import orjson

from interference.errors import (
    ContextLengthExceededError,
    InterferenceError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    RequestTooLargeError,
    UpstreamBusyError,
    UpstreamError,
    UpstreamTimeoutError,
)
from interference.upstream.client import ConnectError, PoolFullError, UpstreamResponse


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


def _upstream_fields(body: bytes) -> tuple[str | None, str | None]:
    """``param`` and ``code`` of an OpenAI-shaped error body, when it names them."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, None
    param, code = error.get("param"), error.get("code")
    return (
        param if isinstance(param, str) else None,
        code if isinstance(code, str) else None,
    )


def error_from_status(
    provider: str, status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> InterferenceError:
    """The exception for an upstream's non-2xx answer."""
    detail = _upstream_message(body)
    message = f"{provider}: upstream answered {status}: {detail}"
    if status == 400 and _CONTEXT_OVERFLOW.search(detail + body[:2000].decode("utf-8", "replace")):
        return ContextLengthExceededError(message, param="messages")
    if status in (400, 422):
        param, code = _upstream_fields(body)  # what the client's request got wrong, as named
        return InvalidRequestError(message, param=param, code=code)
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
    if isinstance(exc, PoolFullError):
        return UpstreamBusyError(
            f"{provider}: {exc}; raise providers.{provider}.max_connections or "
            f"pool_timeout, or add a deployment"
        )
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


class upstream_errors:  # noqa: N801 (used as a function: ``with upstream_errors(name):``)
    """Inside it, a transport failure or a malformed answer becomes the error the router knows
    (:func:`error_from_exception`); an :class:`InterferenceError` passes as it is.

    A class rather than a ``contextlib.contextmanager``: it is on every upstream call, and a
    generator-based one costs a generator and its frame each time."""

    __slots__ = ("provider",)

    def __init__(self, provider: str) -> None:
        self.provider = provider

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, InterferenceError) or not isinstance(exc, Exception):
            return
        raise error_from_exception(self.provider, exc) from exc
