"""A fake Anthropic Messages API over real HTTP on 127.0.0.1.

It speaks Anthropic's wire format (a ``message`` object, or the SSE event sequence
``message_start``, ``content_block_*``, ``message_delta``, ``message_stop``), checks the rules the
real API enforces on requests, records what it received and honours ``upstream.faults``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from itertools import pairwise
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.upstream import FakeUpstream

TEXT_REPLY: list[dict[str, Any]] = [{"type": "text", "text": "Hello there, world!"}]
TOOL_REPLY: list[dict[str, Any]] = [
    {"type": "text", "text": "Let me check."},
    {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
    {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {"tz": "CET"}},
]
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class FakeAnthropic:
    """A Messages API answering ``reply`` (content blocks) with ``stop_reason`` and ``usage``."""

    def __init__(self) -> None:
        self.upstream = FakeUpstream(
            Starlette(routes=[Route("/{prefix:path}/messages", self.messages, methods=["POST"])])
        )
        self.reset()

    def reset(self) -> None:
        self.upstream.reset()
        self.reply = TEXT_REPLY
        self.stop_reason = "end_turn"
        self.usage: dict[str, Any] = {"input_tokens": 12, "output_tokens": 9}
        self.error_after: int | None = None  # send an `error` event after N events
        self.error_type = "overloaded_error"
        self.paths: list[str] = []

    @property
    def observed(self) -> Any:
        return self.upstream.observed

    def message(self) -> dict[str, Any]:
        return {
            "id": "msg_01abc",
            "type": "message",
            "role": "assistant",
            "model": "claude-test-1",
            "content": self.reply,
            "stop_reason": self.stop_reason,
            "stop_sequence": None,
            "usage": self.usage,
        }

    def events(self) -> Iterator[dict[str, Any]]:
        start = {**self.message(), "content": [], "stop_reason": None}
        start["usage"] = {**self.usage, "output_tokens": 1}
        yield {"type": "message_start", "message": start}
        yield {"type": "ping"}
        for index, block in enumerate(self.reply):
            if block["type"] == "text":
                yield {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                }
                for piece in re.findall(r"\s*\S+", block["text"]):
                    delta = {"type": "text_delta", "text": piece}
                    yield {"type": "content_block_delta", "index": index, "delta": delta}
            elif block["type"] == "thinking":
                start_block = {**block, "thinking": "", "signature": ""}
                yield {"type": "content_block_start", "index": index, "content_block": start_block}
                for delta in (
                    {"type": "thinking_delta", "thinking": block["thinking"]},
                    {"type": "signature_delta", "signature": block["signature"]},
                ):
                    yield {"type": "content_block_delta", "index": index, "delta": delta}
            elif "input" not in block:  # results of server tools come whole
                yield {"type": "content_block_start", "index": index, "content_block": block}
            else:  # tool_use and server_tool_use
                yield {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {**block, "input": {}},
                }
                arguments = orjson.dumps(block["input"]).decode()
                for piece in ("", arguments[:5], arguments[5:]):
                    delta = {"type": "input_json_delta", "partial_json": piece}
                    yield {"type": "content_block_delta", "index": index, "delta": delta}
            yield {"type": "content_block_stop", "index": index}
        yield {
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": self.usage["output_tokens"]},
        }
        yield {"type": "message_stop"}

    async def sse(self) -> AsyncIterator[bytes]:
        faults, observed = self.upstream.faults, self.upstream.observed
        finished = False
        try:
            for sent, event in enumerate(self.events()):
                if faults.cut_after_chunks is not None and sent == faults.cut_after_chunks:
                    raise ConnectionAbortedError("cut by the test")  # uvicorn drops the socket
                if self.error_after is not None and sent == self.error_after:
                    error = {"type": self.error_type, "message": "Overloaded"}
                    event = {"type": "error", "error": error}
                if faults.chunk_delay:
                    await asyncio.sleep(faults.chunk_delay)
                yield f"event: {event['type']}\ndata: {orjson.dumps(event).decode()}\n\n".encode()
                if event["type"] == "error":
                    break
            finished = True
            observed.completed_streams += 1
        finally:
            if not finished:
                observed.disconnects += 1

    @staticmethod
    def refuse(message: str) -> JSONResponse:
        error = {"type": "invalid_request_error", "message": message}
        return JSONResponse({"type": "error", "error": error}, status_code=400)

    def check(self, body: dict[str, Any]) -> str | None:
        """The real API's complaint about a request, if any."""
        if not {"model", "messages", "max_tokens"} <= body.keys():
            return "model, messages and max_tokens are required"
        roles = [turn["role"] for turn in body["messages"]]
        if any(a == b for a, b in pairwise(roles)):
            return "roles must alternate between user and assistant"
        if not 0 <= body.get("temperature", 0) <= 1:
            return "temperature: range: 0..1"
        for turn in body["messages"]:
            if isinstance(turn["content"], str):  # the API takes a string for one text block
                continue
            for block in turn["content"]:
                if block["type"] == "text" and not block["text"]:
                    return "text content blocks must be non-empty"
        return None

    async def messages(self, request: Request) -> Response:
        faults, observed = self.upstream.faults, self.upstream.observed
        body = await request.json()
        observed.requests.append(body)
        observed.headers.append(dict(request.headers))
        self.paths.append(request.url.path)
        if faults.hang_before_first_byte:
            await asyncio.sleep(faults.hang_before_first_byte)
        if faults.status is not None:
            headers = {"retry-after": faults.retry_after} if faults.retry_after else {}
            error = {"type": _ERROR_TYPES.get(faults.status, "api_error"), "message": "nope"}
            body = {"type": "error", "error": error}
            return JSONResponse(body, status_code=faults.status, headers=headers)
        if (complaint := self.check(body)) is not None:
            return self.refuse(complaint)
        if faults.malformed:
            if body.get("stream"):
                junk = b"event: message_start\ndata: {not json\n\n"
                return Response(junk, media_type="text/event-stream")
            return Response(b'{"id": "msg_01", "content": [', media_type="application/json")
        if body.get("stream"):
            return StreamingResponse(self.sse(), media_type="text/event-stream")
        return JSONResponse(self.message())
