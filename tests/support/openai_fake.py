"""A fake OpenAI-compatible upstream (``/v1/chat/completions``) that can misbehave on demand."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.upstream import FakeUpstream


def openai_upstream(
    name: str = "fake",
    words: int = 5,
    pieces: list[str] | None = None,
    tls: tuple[str, str] | None = None,
    tool_arguments: str | None = None,
    reasoning: list[str] | None = None,
) -> FakeUpstream:
    """``pieces``, when given and not empty, is the streamed answer's content, piece by piece
    (read at each request: a test may change the list in place); else ``words`` words.
    ``tls``: serve https with this (certificate, key).

    ``tool_arguments``: when a request offers tools and its last message is the user's, the
    answer is a call of the first tool with these arguments (streamed in two pieces), as a model
    would; after the tool's result the answer is text again. ``reasoning``: the pieces of a
    ``reasoning_content`` sent before the answer, as a reasoning model's server does."""
    upstream: FakeUpstream

    def tool_call(body: dict[str, Any]) -> dict[str, Any] | None:
        tools = body.get("tools") or []
        if tool_arguments is None or not tools or body["messages"][-1]["role"] != "user":
            return None
        if body.get("tool_choice") == "none":
            return None
        name = tools[0]["function"]["name"]
        return {"id": f"call_{name}_1", "type": "function", "function": {"name": name}}

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        body = {
            "id": f"chatcmpl-{name}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": extra.pop("model", "upstream-model"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n".encode()

    async def completions(request: Request) -> Response:
        body = await request.json()
        upstream.observed.requests.append(body)
        upstream.observed.headers.append(dict(request.headers))
        faults = upstream.faults
        if faults.hang_before_first_byte:
            deadline = time.monotonic() + faults.hang_before_first_byte
            while time.monotonic() < deadline:
                if await request.is_disconnected():
                    upstream.observed.disconnects += 1
                    return Response(status_code=499)
                await asyncio.sleep(0.02)
        if faults.status is not None:
            headers = {"retry-after": faults.retry_after} if faults.retry_after else {}
            error = {
                "error": {"message": f"{name} says {faults.status}", "type": "x", "code": None}
            }
            return JSONResponse(error, status_code=faults.status, headers=headers)
        text = [f"Hello from {name}"] + [f" w{i}" for i in range(words - 1)]
        if pieces:
            text = list(pieces)
        call = tool_call(body)
        if not body.get("stream"):
            if faults.malformed:
                return Response(b'{"id": "x", "choices": [', media_type="application/json")
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None if call else "".join(text),
                "refusal": None,
            }
            if call:
                message["tool_calls"] = [
                    call | {"function": call["function"] | {"arguments": tool_arguments}}
                ]
            if reasoning:
                message["reasoning_content"] = "".join(reasoning)
            return JSONResponse(
                {
                    "id": f"chatcmpl-{name}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "finish_reason": "tool_calls" if call else "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": 3,
                        "completion_tokens": words,
                        "total_tokens": 3 + words,
                    },
                    "service_tier": "default",
                }
            )

        async def events() -> AsyncIterator[bytes]:
            finished = False
            try:
                yield chunk({"role": "assistant", "content": ""}, model=body["model"])
                for thought in reasoning or ():
                    yield chunk({"reasoning_content": thought}, model=body["model"])
                if call and tool_arguments is not None:
                    half = len(tool_arguments) // 2
                    first = call | {"index": 0}
                    first["function"] = call["function"] | {"arguments": tool_arguments[:half]}
                    yield chunk({"tool_calls": [first]}, model=body["model"])
                    rest = {"index": 0, "function": {"arguments": tool_arguments[half:]}}
                    yield chunk({"tool_calls": [rest]}, model=body["model"])
                for i, piece in enumerate([] if call else text):
                    if faults.cut_after_chunks is not None and i == faults.cut_after_chunks:
                        raise ConnectionAbortedError("cut on purpose")
                    if faults.hang_after_chunks is not None and i == faults.hang_after_chunks:
                        await asyncio.sleep(faults.hang_seconds)
                    if faults.malformed:
                        yield b"data: {not json\n\n"
                    if faults.chunk_delay:
                        await asyncio.sleep(faults.chunk_delay)
                    yield chunk({"content": piece}, model=body["model"])
                yield chunk({}, "tool_calls" if call else "stop", model=body["model"])
                if (body.get("stream_options") or {}).get("include_usage"):
                    usage = {
                        "prompt_tokens": 3,
                        "completion_tokens": words,
                        "total_tokens": 3 + words,
                    }
                    payload = {
                        "id": f"chatcmpl-{name}",
                        "object": "chat.completion.chunk",
                        "created": 1,
                        "model": body["model"],
                        "choices": [],
                        "usage": usage,
                    }
                    yield f"data: {json.dumps(payload)}\n\n".encode()
                yield b"data: [DONE]\n\n"
                finished = True
            finally:
                if finished:
                    upstream.observed.completed_streams += 1
                else:
                    upstream.observed.disconnects += 1

        return StreamingResponse(events(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    upstream = FakeUpstream(app, tls=tls)
    return upstream
