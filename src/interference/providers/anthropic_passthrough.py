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
from interference.providers.passthrough import PassedBody, PassedEvent, token_pair, tokens

#: the request headers of the client that travel with its body
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")


class PassedMessage(PassedBody):
    """A whole Messages answer."""

    def __init__(self, raw: bytes, provider: str) -> None:
        super().__init__(raw, provider)
        if self.data.get("type") != "message":
            raise UpstreamError(f"{provider}: the upstream's answer is not a message")

    def token_counts(self) -> tuple[int, int] | None:
        return token_pair(self.data.get("usage"))


class PassedMessageEvent(PassedEvent):
    """One Messages stream event; ``message_delta`` carries the usage."""

    preamble = frozenset({"message_start", "ping"})

    def completion_tokens(self) -> int | None:
        if self.type != "message_delta":
            return None
        return tokens(self.data.get("usage"), "output_tokens")

    def prompt_tokens(self) -> int | None:
        if self.type == "message_start":
            message = self.data.get("message")
            return tokens(
                message.get("usage") if isinstance(message, dict) else None, "input_tokens"
            )
        if self.type == "message_delta":
            return tokens(self.data.get("usage"), "input_tokens")
        return None


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
