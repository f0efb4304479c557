"""Answers passed on in the upstream's own dialect, kept as the upstream's bytes.

When a request goes to an upstream that speaks the client's dialect (Anthropic's Messages to an
``anthropic`` provider, OpenAI's Responses to an ``openai`` provider with ``responses: true``),
the answer is not translated: the JSON body goes back as it came, and each stream event with its
``data`` bytes as they came (its ``event:`` line is the event's ``type``, as both APIs write it).
These holders meet the ``Reply`` and ``StreamChunk`` protocols of :mod:`interference.wire.chunks`,
so that the router fails over, bounds and accounts for them like any answer; each dialect's
module says which events come before output and where the usage is.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from interference.errors import UpstreamError


def json_of(raw: bytes, provider: str) -> dict[str, Any]:
    """The JSON object in ``raw``, or the upstream error the router knows."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise UpstreamError(f"{provider}: the upstream answered something that is not JSON")
    return data


class PassedBody:
    """A whole answer, kept as the upstream's bytes."""

    def __init__(self, raw: bytes, provider: str) -> None:
        self.raw = raw
        self.data = json_of(raw, provider)

    def stamp(self, cid: str, created: int, model: str) -> None:
        """Left as the upstream wrote it: the client talks to the upstream through us."""

    def to_json(self) -> bytes:
        return self.raw


class PassedEvent:
    """One stream event, kept as the upstream's ``data`` bytes."""

    #: the event types that come before any output: a failure after them may still fall back
    preamble: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, raw: bytes, provider: str) -> None:
        self.raw = raw
        self.data = json_of(raw, provider)
        self.type = str(self.data.get("type", ""))

    def frame(self) -> bytes:
        """The event as the upstream's API frames it."""
        return b"event: " + self.type.encode() + b"\ndata: " + self.raw + b"\n\n"

    def has_output(self) -> bool:
        return self.type not in self.preamble

    def has_choices(self) -> bool:
        return False

    def completion_tokens(self) -> int | None:
        return None

    def prompt_tokens(self) -> int | None:
        return None

    def cached_tokens(self) -> int | None:
        return None

    def stamp(self, cid: str, created: int, model: str) -> None:
        """Left as the upstream wrote it."""

    def drop_usage(self) -> None:
        """The usage belongs to the upstream's events; nothing to drop."""

    def to_json(self) -> bytes:
        return self.raw


def tokens(usage: Any, key: str) -> int | None:
    """``usage[key]`` when it is a count."""
    value = usage.get(key) if isinstance(usage, dict) else None
    return value if isinstance(value, int) else None


def token_pair(usage: Any) -> tuple[int, int] | None:
    """``(input_tokens, output_tokens)`` of a usage object (both APIs name them so)."""
    prompt, completion = tokens(usage, "input_tokens"), tokens(usage, "output_tokens")
    if prompt is None or completion is None:
        return None
    return prompt, completion


def with_model(body: bytes, asked: str, upstream_model: str) -> bytes:
    """The body for the upstream: unchanged when the upstream knows the model by the name the
    client used, else with ``model`` rewritten (orjson keeps the other keys in their order)."""
    if asked == upstream_model:
        return body
    data = orjson.loads(body)
    data["model"] = upstream_model
    return orjson.dumps(data)
