"""Anthropic's Messages API passed through to an ``anthropic``-kind provider.

A ``POST /v1/messages`` routed to Anthropic (or a compatible proxy) goes as the client wrote it:
the body's bytes unchanged (only ``model`` is rewritten, when the public name maps to another
upstream id), the client's ``anthropic-version`` and ``anthropic-beta`` headers with it, and the
answer comes back unchanged: the JSON body as it was, and each stream event with its ``data``
bytes as they were (its ``event:`` line is the event's ``type``, as Anthropic writes it). Beta
features, ``cache_control``, server tools and thinking signatures therefore work as they do
against Anthropic itself (the holders: :mod:`interference.providers.passthrough`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

from interference.errors import InterferenceError, UpstreamError
from interference.providers.passthrough import PassedBody, PassedEvent, tokens

#: the request headers of the client that travel with its body
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")


class PassedMessage(PassedBody):
    """A whole Messages answer."""

    def __init__(self, raw: bytes, provider: str) -> None:
        super().__init__(raw, provider)
        if self.data.get("type") != "message":
            raise UpstreamError(f"{provider}: the upstream's answer is not a message")

    def token_counts(self) -> tuple[int, int] | None:
        usage = self.data.get("usage")
        prompt, completion = prompt_of(usage), tokens(usage, "output_tokens")
        return None if prompt is None or completion is None else (prompt, completion)

    def cached_tokens(self) -> int | None:
        return tokens(self.data.get("usage"), "cache_read_input_tokens")


def prompt_of(usage: Any) -> int | None:
    """All of a Messages usage's prompt: ``input_tokens`` counts only what came after the last
    cache breakpoint; the tokens read from and written to the cache are the rest."""
    fresh = tokens(usage, "input_tokens")
    if fresh is None:
        return None
    read = tokens(usage, "cache_read_input_tokens") or 0
    return fresh + read + (tokens(usage, "cache_creation_input_tokens") or 0)


class PassedMessageEvent(PassedEvent):
    """One Messages stream event; ``message_delta`` carries the usage."""

    preamble = frozenset({"message_start", "ping"})

    def completion_tokens(self) -> int | None:
        if self.type != "message_delta":
            return None
        return tokens(self.data.get("usage"), "output_tokens")

    def _usage(self) -> Any:
        if self.type == "message_start":
            message = self.data.get("message")
            return message.get("usage") if isinstance(message, dict) else None
        return self.data.get("usage") if self.type == "message_delta" else None

    def prompt_tokens(self) -> int | None:
        return prompt_of(self._usage())

    def cached_tokens(self) -> int | None:
        return tokens(self._usage(), "cache_read_input_tokens")


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The client's headers that go to the upstream with the body."""
    return {name: headers[name] for name in FORWARDED_HEADERS if name in headers}


async def passed_events(
    batches: AsyncGenerator[list[bytes], None],
    provider: str,
    failure: Callable[[Any], InterferenceError],
) -> AsyncGenerator[list[PassedMessageEvent], None]:
    """The upstream's events, grouped as they arrived, up to and including ``message_stop``.
    An ``error`` event raises ``failure(its error)``: before any output the router may then
    fall back, and after it the route sends the error in Anthropic's words."""
    async for payloads in batches:
        events = [PassedMessageEvent(raw, provider) for raw in payloads]
        for i, event in enumerate(events):
            if event.type == "error":
                if i:
                    yield events[:i]
                raise failure(event.data.get("error"))
        yield events
        if any(event.type == "message_stop" for event in events):
            return
    raise UpstreamError(f"{provider}: the upstream stream ended without message_stop")
