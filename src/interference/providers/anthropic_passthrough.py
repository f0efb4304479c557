"""Anthropic's Messages API passed through to an ``anthropic``-kind provider.

A ``POST /v1/messages`` routed to Anthropic (or a compatible proxy) goes as the client wrote it:
the body's bytes unchanged (only ``model`` is rewritten, when the public name maps to another
upstream id), the client's ``anthropic-version`` and ``anthropic-beta`` headers with it, and the
answer comes back unchanged: the JSON body as it was, and each stream event with its ``data``
bytes as they were (its ``event:`` line is the event's ``type``, as Anthropic writes it). Beta
features, ``cache_control``, server tools and thinking signatures therefore work as they do
against Anthropic itself. The holders below meet the ``Reply`` and ``StreamChunk`` protocols of
:mod:`interference.wire.chunks`, so the router fails over and accounts for them like any answer.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import orjson

from interference.errors import InterferenceError, UpstreamError

#: the request headers of the client that travel with its body
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")
#: stream events before any output: a failure after them may still fall back
_PREAMBLE = frozenset({"message_start", "ping"})


def _object(raw: bytes, provider: str) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise UpstreamError(f"{provider}: the upstream answered something that is not JSON")
    return data


def _tokens(usage: Any, key: str) -> int | None:
    value = usage.get(key) if isinstance(usage, dict) else None
    return value if isinstance(value, int) else None


class PassedMessage:
    """A whole Messages answer, kept as the upstream's bytes."""

    def __init__(self, raw: bytes, provider: str) -> None:
        self.raw = raw
        self.data = _object(raw, provider)
        if self.data.get("type") != "message":
            raise UpstreamError(f"{provider}: the upstream's answer is not a message")

    def token_counts(self) -> tuple[int, int] | None:
        usage = self.data.get("usage")
        prompt, completion = _tokens(usage, "input_tokens"), _tokens(usage, "output_tokens")
        if prompt is None or completion is None:
            return None
        return prompt, completion

    def stamp(self, cid: str, created: int, model: str) -> None:
        """Left as the upstream wrote it: the client talks to Anthropic through us."""

    def to_json(self) -> bytes:
        return self.raw


class PassedEvent:
    """One Messages stream event, kept as the upstream's ``data`` bytes."""

    def __init__(self, raw: bytes, provider: str) -> None:
        self.raw = raw
        data = _object(raw, provider)
        self.type = str(data.get("type", ""))
        self.usage = data.get("usage") if self.type == "message_delta" else None

    def frame(self) -> bytes:
        """The event as Anthropic frames it."""
        return b"event: " + self.type.encode() + b"\ndata: " + self.raw + b"\n\n"

    def has_output(self) -> bool:
        return self.type not in _PREAMBLE

    def has_choices(self) -> bool:
        return False

    def completion_tokens(self) -> int | None:
        return _tokens(self.usage, "output_tokens")

    def stamp(self, cid: str, created: int, model: str) -> None:
        """Left as the upstream wrote it."""

    def drop_usage(self) -> None:
        """Anthropic's usage belongs to its events; nothing to drop."""

    def to_json(self) -> bytes:
        return self.raw


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The client's headers that go to the upstream with the body."""
    return {name: headers[name] for name in FORWARDED_HEADERS if name in headers}


def with_model(body: bytes, asked: str, upstream_model: str) -> bytes:
    """The body for the upstream: unchanged when the upstream knows the model by the name the
    client used, else with ``model`` rewritten (orjson keeps the other keys in their order)."""
    if asked == upstream_model:
        return body
    data = orjson.loads(body)
    data["model"] = upstream_model
    return orjson.dumps(data)


async def passed_events(
    batches: AsyncGenerator[list[bytes], None],
    provider: str,
    failure: Callable[[Any], InterferenceError],
) -> AsyncGenerator[list[PassedEvent], None]:
    """The upstream's events, grouped as they arrived, up to and including ``message_stop``.
    An ``error`` event raises ``failure(its error)``: before any output the router may then
    fall back, and after it the route sends the error in Anthropic's words."""
    async for payloads in batches:
        events = [PassedEvent(raw, provider) for raw in payloads]
        for i, event in enumerate(events):
            if event.type == "error":
                if i:
                    yield events[:i]
                raise failure(orjson.loads(event.raw).get("error"))
        yield events
        if any(event.type == "message_stop" for event in events):
            return
    raise UpstreamError(f"{provider}: the upstream stream ended without message_stop")
