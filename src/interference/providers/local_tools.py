"""Tool calling for local models whose chat template has no tool format (SmolLM2, ...).

The model is told about the functions in a system message and its output is constrained by a
JSON-schema grammar to exactly one of: ``{"tool_calls": [{"name": ..., "arguments": {...}}]}``,
each call matching a declared function's parameters schema, or ``{"response": "..."}`` for a
plain answer (``tool_choice: "auto"``). The answer is then turned back into OpenAI's
``tool_calls`` with ``finish_reason: "tool_calls"``, or into ordinary content. Earlier tool calls
and tool results in the history are written back into the same JSON dialect.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from interference.providers.tool_use import ToolUse
from interference.wire.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    Delta,
    FunctionCall,
    ResponseToolCall,
    ToolCallDelta,
    ToolCallFunctionDelta,
)
from interference.wire.tools import FunctionDefinition

_INSTRUCTIONS = (
    "You can call functions. Available functions, as JSON schemas of their arguments:\n"
    "{functions}\n"
    "To call functions, reply with a JSON object "
    '{{"tool_calls": [{{"name": <function name>, "arguments": <arguments object>}}]}}.'
    "{answer}"
)
_ANSWER = ' To answer directly instead, reply with {"response": <your answer as a string>}.'


def wants_tools(request: ChatCompletionRequest) -> bool:
    return bool(request.tools) and request.tool_choice != "none"


def _schema(mode: str, functions: list[FunctionDefinition], parallel: bool) -> dict[str, Any]:
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": f.name},
                "arguments": f.parameters or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for f in functions
    ]
    array: dict[str, Any] = {"type": "array", "items": {"anyOf": calls}, "minItems": 1}
    if not parallel:
        array["maxItems"] = 1
    call = {
        "type": "object",
        "properties": {"tool_calls": array},
        "required": ["tool_calls"],
        "additionalProperties": False,
    }
    if mode == "required":
        return call
    answer = {
        "type": "object",
        "properties": {"response": {"type": "string"}},
        "required": ["response"],
        "additionalProperties": False,
    }
    return {"anyOf": [call, answer]}


def _history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool calls and results of earlier turns, in the JSON dialect the model is told about."""
    names: dict[str, str] = {}
    out = []
    for message in messages:
        if message["role"] == "assistant" and message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                names[call["id"]] = call["function"]["name"]
                try:
                    arguments = orjson.loads(call["function"]["arguments"] or "{}")
                except orjson.JSONDecodeError:
                    arguments = call["function"]["arguments"]
                calls.append({"name": call["function"]["name"], "arguments": arguments})
            out.append(
                {"role": "assistant", "content": orjson.dumps({"tool_calls": calls}).decode()}
            )
        elif message["role"] == "tool":
            content = message["content"]
            if not isinstance(content, str):
                content = "".join(part.get("text", "") for part in content)
            name = names.get(message.get("tool_call_id", ""), "the function")
            out.append({"role": "user", "content": f"Result of {name}: {content}"})
        else:
            out.append(message)
    return out


def apply(request: ChatCompletionRequest, payload: dict[str, Any], tools: ToolUse) -> None:
    """Rewrite an engine payload so the model answers with a tool call or a plain answer."""
    mode = "auto" if tools.mode == "auto" else "required"
    functions = tools.callable
    declared = "\n".join(
        orjson.dumps(
            {"name": f.name, "description": f.description or "", "parameters": f.parameters or {}}
        ).decode()
        for f in functions
    )
    instructions = _INSTRUCTIONS.format(
        functions=declared, answer=_ANSWER if mode == "auto" else ""
    )
    messages = _history(payload["messages"])
    if messages and messages[0]["role"] == "system" and isinstance(messages[0]["content"], str):
        messages[0] = {"role": "system", "content": f"{messages[0]['content']}\n\n{instructions}"}
    else:
        messages.insert(0, {"role": "system", "content": instructions})
    payload["messages"] = messages
    schema = _schema(mode, functions, request.parallel_tool_calls is not False)
    payload["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": schema},
    }
    for key in ("tools", "tool_choice", "parallel_tool_calls"):
        payload.pop(key, None)


def _parse(text: str) -> tuple[str | None, list[ResponseToolCall]]:
    """The model's JSON reply as (answer, tool calls); unparseable text stays an answer."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text, []
    if isinstance(data, dict) and isinstance(data.get("tool_calls"), list):
        calls = [
            ResponseToolCall(
                id=f"call_{uuid.uuid4().hex[:24]}",
                function=FunctionCall(
                    name=str(call.get("name", "")),
                    arguments=orjson.dumps(call.get("arguments", {})).decode(),
                ),
            )
            for call in data["tool_calls"]
            if isinstance(call, dict)
        ]
        return None, calls
    if isinstance(data, dict) and isinstance(data.get("response"), str):
        return data["response"], []
    return text, []


def translate_completion(completion: ChatCompletion) -> ChatCompletion:
    for choice in completion.choices:
        answer, calls = _parse(choice.message.content or "")
        choice.message.content = answer
        if calls:
            choice.message.tool_calls = calls
            choice.finish_reason = "tool_calls"
    return completion


async def translate_stream(
    chunks: AsyncGenerator[ChatCompletionChunk, None],
) -> AsyncGenerator[ChatCompletionChunk, None]:
    """Hold back each choice's JSON until it is complete, then send it as OpenAI deltas."""
    texts: dict[int, list[str]] = {}
    try:
        async for chunk in chunks:
            passed: list[ChunkChoice] = []
            extra: list[ChatCompletionChunk] = []
            for choice in chunk.choices:
                delta = choice.delta
                if delta.role is not None:
                    passed.append(choice)  # the opening role chunk goes out as it is
                    continue
                texts.setdefault(choice.index, []).append(delta.content or "")
                if choice.finish_reason is None:
                    continue
                answer, calls = _parse("".join(texts.pop(choice.index)))
                finish = choice.finish_reason
                if calls:
                    finish = "tool_calls"
                    deltas = [
                        ToolCallDelta(
                            index=i,
                            id=call.id,
                            type="function",
                            function=ToolCallFunctionDelta(
                                name=call.function.name, arguments=call.function.arguments
                            ),
                        )
                        for i, call in enumerate(calls)
                    ]
                    body = ChunkChoice(index=choice.index, delta=Delta(tool_calls=deltas))
                else:
                    body = ChunkChoice(index=choice.index, delta=Delta(content=answer or ""))
                end = ChunkChoice(index=choice.index, delta=Delta(), finish_reason=finish)
                for part in (body, end):
                    extra.append(chunk.model_copy(update={"choices": [part], "usage": None}))
            if passed or chunk.usage is not None:
                yield chunk.model_copy(update={"choices": passed})
            for item in extra:
                item.model_fields_set.discard("usage")
                yield item
    finally:
        await chunks.aclose()
