"""OpenAI's Responses API passed through to an ``openai``-kind provider configured with
``responses: true`` (an upstream that serves ``/v1/responses`` itself: OpenAI, vLLM, llama.cpp's
server, another interference).

The body goes as the client wrote it (only ``model`` rewritten when the deployment names another
upstream id) and the answer comes back unchanged: the JSON body as it was, each stream event's
``data`` bytes as they were (its ``event:`` line is the event's ``type``). ``store`` and
``previous_response_id`` are then the upstream's business: it keeps the conversation. The
holders meet the ``Reply`` and ``StreamChunk`` protocols of :mod:`interference.wire.chunks`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import orjson

from interference.errors import UpstreamError

#: stream events before any output: a failure after them may still fall back
_PREAMBLE = frozenset({"response.created", "response.in_progress", "response.queued"})
_END = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _object(raw: bytes, provider: str) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise UpstreamError(f"{provider}: the upstream answered something that is not JSON")
    return data


def _usage_tokens(response: Any) -> tuple[int, int] | None:
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return prompt, completion
    return None


class PassedResponse:
    """A whole response object, kept as the upstream's bytes."""

    def __init__(self, raw: bytes, provider: str) -> None:
        self.raw = raw
        self.data = _object(raw, provider)
        if self.data.get("object") != "response":
            raise UpstreamError(f"{provider}: the upstream's answer is not a response object")

    def token_counts(self) -> tuple[int, int] | None:
        return _usage_tokens(self.data)

    def stamp(self, cid: str, created: int, model: str) -> None:
        """Left as the upstream wrote it: its id is the one previous_response_id names."""

    def to_json(self) -> bytes:
        return self.raw


class PassedResponseEvent:
    """One Responses stream event, kept as the upstream's ``data`` bytes."""

    def __init__(self, raw: bytes, provider: str) -> None:
        self.raw = raw
        data = _object(raw, provider)
        self.type = str(data.get("type", ""))
        self.response = data.get("response") if self.type in _END else None

    def frame(self) -> bytes:
        return b"event: " + self.type.encode() + b"\ndata: " + self.raw + b"\n\n"

    def has_output(self) -> bool:
        return self.type not in _PREAMBLE

    def has_choices(self) -> bool:
        return False

    def completion_tokens(self) -> int | None:
        counts = _usage_tokens(self.response)
        return counts[1] if counts else None

    def stamp(self, cid: str, created: int, model: str) -> None:
        """Left as the upstream wrote it."""

    def drop_usage(self) -> None:
        """The usage belongs to the response object; nothing to drop."""

    def to_json(self) -> bytes:
        return self.raw


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
                error = orjson.loads(event.raw)
                detail = error.get("message") or error.get("error") or "no detail"
                raise UpstreamError(f"{provider}: upstream error event: {detail}")
        yield events
        if any(event.type in _END for event in events):
            return
    raise UpstreamError(f"{provider}: the upstream stream ended before the response did")
