"""OpenAI's Responses API passed through to an ``openai``-kind provider configured with
``responses: true`` (an upstream that serves ``/v1/responses`` itself: OpenAI, vLLM, llama.cpp's
server, another interference).

The body goes as the client wrote it (only ``model`` rewritten when the deployment names another
upstream id) and the answer comes back unchanged: the JSON body as it was, each stream event's
``data`` bytes as they were (its ``event:`` line is the event's ``type``). ``store`` and
``previous_response_id`` are then the upstream's business: it keeps the conversation. The
holders: :mod:`interference.providers.passthrough`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from interference.errors import UpstreamError
from interference.providers.passthrough import PassedBody, PassedEvent, token_pair, tokens

_END = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _usage_tokens(response: Any) -> tuple[int, int] | None:
    return token_pair(response.get("usage") if isinstance(response, dict) else None)


def _cached(response: Any) -> int | None:
    """``usage.input_tokens_details.cached_tokens`` of a response object."""
    usage = response.get("usage") if isinstance(response, dict) else None
    details = usage.get("input_tokens_details") if isinstance(usage, dict) else None
    return tokens(details, "cached_tokens")


class PassedResponse(PassedBody):
    """A whole response object; its id is the one a ``previous_response_id`` names."""

    def __init__(self, raw: bytes, provider: str) -> None:
        super().__init__(raw, provider)
        if self.data.get("object") != "response":
            raise UpstreamError(f"{provider}: the upstream's answer is not a response object")

    def token_counts(self) -> tuple[int, int] | None:
        return _usage_tokens(self.data)

    def cached_tokens(self) -> int | None:
        return _cached(self.data)


class PassedResponseEvent(PassedEvent):
    """One Responses stream event; the last one's response carries the usage."""

    preamble = frozenset({"response.created", "response.in_progress", "response.queued"})

    def completion_tokens(self) -> int | None:
        if self.type not in _END:
            return None
        counts = _usage_tokens(self.data.get("response"))
        return counts[1] if counts else None

    def prompt_tokens(self) -> int | None:
        if self.type not in _END:
            return None
        counts = _usage_tokens(self.data.get("response"))
        return counts[0] if counts else None

    def cached_tokens(self) -> int | None:
        return _cached(self.data.get("response")) if self.type in _END else None


async def passed_response_events(
    batches: AsyncGenerator[list[bytes], None], provider: str
) -> AsyncGenerator[list[PassedResponseEvent], None]:
    """The upstream's events, grouped as they arrived, up to the response's last event. A bare
    ``error`` event (the stream's own failure) raises before any output, so that the router
    may fall back; ``response.failed`` is passed on as the upstream's answer."""
    async for payloads in batches:
        events = [PassedResponseEvent(raw, provider) for raw in payloads]
        for i, event in enumerate(events):
            if event.type == "error":
                if i:
                    yield events[:i]
                detail = event.data.get("message") or event.data.get("error") or "no detail"
                raise UpstreamError(f"{provider}: upstream error event: {detail}")
        yield events
        if any(event.type in _END for event in events):
            return
    raise UpstreamError(f"{provider}: the upstream stream ended before the response did")
