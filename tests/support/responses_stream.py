"""A strict reader of the Responses event stream, as exacting as Codex and the openai SDK.

:func:`read_stream` fails (``AssertionError``, or jsonschema's ``ValidationError``) on: a frame
without its ``event:`` line or whose name differs from its ``type``; an event the spec does not
define, or one that does not validate against the spec's schema; a missing or out-of-order
``sequence_number``; anything before ``response.created`` and ``response.in_progress``; a delta
for an item that was not added or is already done, or with another item's id or index; an item
added out of order; a ``.done`` whose text or arguments differ from its deltas; an
``output_item.done`` whose item differs in type or id from the one added; a last event other
than ``response.completed``, ``.incomplete`` or ``.failed``, or anything after it; a final
response whose id, or whose output, differs from what the events built.

The spec's ``ResponseErrorCode`` lags OpenAI's API: it lacks ``context_length_exceeded``, which
the API sends and Codex acts on; a failed response with that code is validated as if its code
were ``server_error``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from tests.support.spec import validate

SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.custom_tool_call_input.done": "ResponseCustomToolCallInputDoneEvent",
    "response.reasoning_text.delta": "ResponseReasoningTextDeltaEvent",
    "response.reasoning_text.done": "ResponseReasoningTextDoneEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent",
}
FINAL = {"response.completed", "response.incomplete", "response.failed"}
DELTAS = {
    "response.output_text.delta": "message",
    "response.reasoning_text.delta": "reasoning",
    "response.function_call_arguments.delta": "function_call",
}


@dataclass
class ResponseStream:
    response: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    comments: int = 0  # keep-alive comment lines

    @property
    def text(self) -> str:
        return "".join(
            part["text"]
            for item in self.response["output"]
            if item["type"] == "message"
            for part in item["content"]
        )


def _validate(data: dict[str, Any]) -> None:
    if data["type"] == "response.failed" and data["response"]["error"]["code"] == (
        "context_length_exceeded"
    ):
        data = copy.deepcopy(data)
        data["response"]["error"]["code"] = "server_error"
    validate(data, SCHEMAS[data["type"]])


def read_stream(raw: bytes | str) -> ResponseStream:
    text = raw.decode() if isinstance(raw, bytes) else raw
    assert text.endswith("\n\n"), f"the stream does not end with a blank line: {text[-80:]!r}"
    result = ResponseStream(response={})
    items: list[dict[str, Any]] = []  # as added, then as done
    done: list[bool] = []
    buffers: dict[int, str] = {}
    final: dict[str, Any] | None = None
    created_id = None
    for block in text.removesuffix("\n\n").split("\n\n"):
        if block.startswith(":"):
            result.comments += 1
            continue
        lines = block.split("\n")
        assert len(lines) == 2, f"a frame is not an event line and a data line: {block!r}"
        assert lines[0].startswith("event: "), f"no event line: {block!r}"
        assert lines[1].startswith("data: "), f"no data line: {block!r}"
        name = lines[0].removeprefix("event: ")
        data = json.loads(lines[1].removeprefix("data: "))
        assert data.get("type") == name, f"event {name} carries type {data.get('type')}"
        assert name in SCHEMAS, f"an event the spec does not define: {name}"
        assert final is None, f"{name} after {final and final['type']}"
        assert data.get("sequence_number") == len(result.events), (
            f"{name}: sequence_number {data.get('sequence_number')}, expected {len(result.events)}"
        )
        _validate(data)
        result.events.append(data)
        position = len(result.events) - 1
        if position == 0:
            assert name == "response.created", f"the stream begins with {name}"
            created_id = data["response"]["id"]
            assert data["response"]["status"] == "in_progress"
            continue
        if position == 1:
            assert name == "response.in_progress", f"{name} before response.in_progress"
            continue
        if name in FINAL:
            final = data
            continue
        index = data["output_index"]
        if name == "response.output_item.added":
            assert index == len(items), f"item {index} added, expected {len(items)}"
            assert all(done), "an item added while another is still open"
            items.append(data["item"])
            done.append(False)
            buffers[index] = ""
            continue
        assert index < len(items), f"{name} for item {index}, which was not added"
        assert not done[index], f"{name} for item {index}, which is done"
        item = items[index]
        if "item_id" in data:
            assert data["item_id"] == item["id"], f"{name}: item_id of another item"
        if name in DELTAS:
            assert item["type"] == DELTAS[name], f"{name} in a {item['type']} item"
            buffers[index] += data["delta"]
        elif name == "response.output_text.done" or name == "response.reasoning_text.done":
            assert data["text"] == buffers[index], f"{name}: text differs from the deltas"
        elif name == "response.function_call_arguments.done":
            assert data["arguments"] == buffers[index], f"{name}: arguments differ from deltas"
        elif name == "response.output_item.done":
            finished = data["item"]
            assert (finished["type"], finished["id"]) == (item["type"], item["id"])
            assert finished.get("status") == "completed", f"item {index} done but not completed"
            if finished["type"] == "message":
                assert finished["content"][0]["text"] == buffers[index]
            if finished["type"] == "function_call":
                assert finished["arguments"] == buffers[index]
                json.loads(finished["arguments"] or "{}")
            items[index] = finished
            done[index] = True
    assert final is not None, "the stream ended without response.completed/incomplete/failed"
    response = final["response"]
    assert response["id"] == created_id, "the final response has another id"
    if final["type"] != "response.failed":
        assert all(done), "the response ended with an item open"
        assert response["output"] == items, "the final output differs from the items done"
        assert response["usage"]["total_tokens"] == (
            response["usage"]["input_tokens"] + response["usage"]["output_tokens"]
        )
    result.response = response
    return result
