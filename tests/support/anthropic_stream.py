"""A strict reader of Anthropic's Messages event stream, as exacting as Claude Code.

:func:`read_stream` parses the raw bytes and fails (``AssertionError``) on anything a careful
client would trip on: a frame without its ``event:`` line or whose name differs from its
``type``; an event type Anthropic does not send; a second ``message_start`` or anything before
it other than a ``ping``; a block delta before its ``content_block_start``, with another
block's index, or of the wrong kind for its block (``text_delta`` in a ``tool_use`` block); a
block index out of sequence; a block left open; a thinking block without its
``signature_delta``; tool arguments that do not parse to an object; ``message_delta`` before
every block is closed, or without a stop reason of Anthropic's vocabulary or an output token
count; anything after ``message_stop``, or a stream without it (unless it ends with ``error``).
It returns the message the stream built, as the SDK would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

EVENTS = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    }
)
DELTAS = {
    "text": {"text_delta"},
    "tool_use": {"input_json_delta"},
    "thinking": {"thinking_delta", "signature_delta"},
}
STOP_REASONS = {"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"}


@dataclass
class StreamResult:
    message: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None  # the ``error`` event's ``error``, if it ended so
    pings: int = 0


def frames(raw: bytes | str) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` of each frame, each checked for its two lines."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    assert text.endswith("\n\n"), f"the stream does not end with a blank line: {text[-80:]!r}"
    out = []
    for block in text.removesuffix("\n\n").split("\n\n"):
        lines = block.split("\n")
        assert len(lines) == 2, f"a frame is not an event line and a data line: {block!r}"
        assert lines[0].startswith("event: "), f"no event line: {block!r}"
        assert lines[1].startswith("data: "), f"no data line: {block!r}"
        name = lines[0].removeprefix("event: ")
        data = json.loads(lines[1].removeprefix("data: "))
        assert data.get("type") == name, f"event {name} carries type {data.get('type')}"
        assert name in EVENTS, f"an event Anthropic does not send: {name}"
        out.append((name, data))
    return out


def _check_usage(usage: Any, where: str) -> None:
    assert isinstance(usage, dict), f"{where}: no usage"
    for key, value in usage.items():
        assert value is None or isinstance(value, int | dict), f"{where}: usage.{key}={value!r}"


def read_stream(raw: bytes | str) -> StreamResult:
    message: dict[str, Any] | None = None
    result = StreamResult(message={})
    open_index: int | None = None
    open_block: dict[str, Any] | None = None
    signed = False
    partial_json = ""
    delta_seen = False
    stopped = False
    for name, data in frames(raw):
        result.events.append(data)
        assert not stopped, f"{name} after message_stop"
        assert result.error is None, f"{name} after the error event"
        if name == "ping":
            result.pings += 1
            continue
        if name == "error":
            error = data.get("error")
            assert isinstance(error, dict), "an error event without its error"
            assert isinstance(error.get("type"), str)
            assert isinstance(error.get("message"), str)
            assert open_block is None or open_index is not None
            result.error = error
            continue
        if name == "message_start":
            assert message is None, "a second message_start"
            message = data["message"]
            assert message["type"] == "message"
            assert message["role"] == "assistant"
            assert message["content"] == []
            assert message["stop_reason"] is None
            assert message["id"].startswith("msg_")
            _check_usage(message.get("usage"), "message_start")
            continue
        assert message is not None, f"{name} before message_start"
        content: list[dict[str, Any]] = message["content"]
        if name == "content_block_start":
            assert open_block is None, f"block {data['index']} starts while {open_index} is open"
            assert not delta_seen, "a block after message_delta"
            assert data["index"] == len(content), (
                f"block index {data['index']}, expected {len(content)}"
            )
            block = dict(data["content_block"])
            assert block["type"] in DELTAS, f"a block of type {block['type']}"
            if block["type"] == "tool_use":
                assert block["id"], "a tool_use block without its id"
                assert block["name"], "a tool_use block without its name"
                assert block["input"] == {}, "a streamed tool_use block starts with input {}"
            content.append(block)
            open_index, open_block, signed, partial_json = data["index"], block, False, ""
            continue
        if name == "content_block_delta":
            assert open_block is not None, f"a delta for block {data['index']}, none is open"
            assert data["index"] == open_index, f"a delta for {data['index']} in {open_index}"
            delta = data["delta"]
            kind = open_block["type"]
            assert delta["type"] in DELTAS[kind], f"{delta['type']} in a {kind} block"
            if delta["type"] == "text_delta":
                open_block["text"] += delta["text"]
            elif delta["type"] == "input_json_delta":
                partial_json += delta["partial_json"]
            elif delta["type"] == "thinking_delta":
                assert not signed, "thinking after the signature"
                open_block["thinking"] += delta["thinking"]
            else:
                signed = True
                open_block["signature"] = delta["signature"]
            continue
        if name == "content_block_stop":
            assert open_block is not None, "a stop while no block is open"
            assert data["index"] == open_index, f"a stop of {data['index']}, {open_index} is open"
            if open_block["type"] == "thinking":
                assert signed, "a thinking block closed without its signature_delta"
            if open_block["type"] == "tool_use":
                value = json.loads(partial_json) if partial_json else {}
                assert isinstance(value, dict), f"tool input is not an object: {partial_json}"
                open_block["input"] = value
            open_block, open_index = None, None
            continue
        if name == "message_delta":
            assert open_block is None, f"message_delta while block {open_index} is open"
            stop = data["delta"]["stop_reason"]
            assert stop in STOP_REASONS, f"stop_reason {stop!r}"
            assert "stop_sequence" in data["delta"]
            _check_usage(data.get("usage"), "message_delta")
            assert isinstance(data["usage"].get("output_tokens"), int), "no output_tokens"
            message["stop_reason"] = stop
            message["stop_sequence"] = data["delta"]["stop_sequence"]
            message["usage"] = {**message["usage"], **data["usage"]}
            delta_seen = True
            continue
        assert name == "message_stop"
        assert delta_seen, "message_stop without message_delta"
        stopped = True
    assert message is not None, "no message_start"
    assert stopped or result.error is not None, "the stream ended without message_stop"
    result.message = message
    return result
