"""A chat answer as a Responses ``response``, whole or as the Responses event stream.

Output items: a ``reasoning`` item where the model reasoned (``reasoning_content``, as
``reasoning_text``), a ``message`` with one ``output_text`` part, and a ``function_call`` (or
``custom_tool_call``) per tool call, named as the request named its tool. A stream sends, each
event with its ``sequence_number``: ``response.created`` and ``response.in_progress``; per item
``output_item.added``, its deltas (``content_part.added``, ``output_text.delta``...,
``output_text.done``, ``content_part.done``; ``function_call_arguments.delta``... and
``.done``; ``reasoning_text.delta``... and ``.done``) and ``output_item.done`` with the whole
item (which Codex reads); then ``response.completed``, or ``response.incomplete`` when the answer
hit its token limit, or ``response.failed`` with an error ``code`` (``context_length_exceeded``,
``rate_limit_exceeded``, ``server_error``: the codes Codex acts on).
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from interference.api.responses_translation import ToolNames
from interference.errors import ContextLengthExceededError, InterferenceError, RateLimitError
from interference.wire.responses import ResponsesRequest

Json = dict[str, Any]


def new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(16).hex()}"


def skeleton(request: ResponsesRequest, response_id: str, created_at: int) -> Json:
    """The response object before any output: the request's settings echoed, as OpenAI does."""
    response: Json = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "model": request.model,
        "output": [],
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": request.previous_response_id,
        "reasoning": request.reasoning or {"effort": None, "summary": None},
        "store": request.store is not False,
        "temperature": 1.0 if request.temperature is None else request.temperature,
        "text": request.text or {"format": {"type": "text"}},
        "tool_choice": request.tool_choice or "auto",
        "tools": request.tools or [],
        "top_p": 1.0 if request.top_p is None else request.top_p,
        "truncation": request.truncation or "disabled",
        "metadata": request.metadata or {},
    }
    if request.user is not None:  # a string or absent, in the spec
        response["user"] = request.user
    return response


def usage_of(usage: Json | None) -> Json:
    usage = usage or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def _reasoning(fields: Json) -> str | None:
    value = fields.get("reasoning_content") or fields.get("reasoning")
    return value if isinstance(value, str) else None


def reasoning_item(text: str, status: str = "completed") -> Json:
    content = [{"type": "reasoning_text", "text": text}] if text else []
    return {
        "type": "reasoning",
        "id": new_id("rs"),
        "summary": [],
        "content": content,
        "status": status,
    }


def message_item(text: str, status: str = "completed") -> Json:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {
        "type": "message",
        "id": new_id("msg"),
        "status": status,
        "role": "assistant",
        "content": [part] if status == "completed" else [],
    }


def call_item(call_id: str, chat_name: str, arguments: str, names: ToolNames, status: str) -> Json:
    namespace, name, kind = names.origin(chat_name)
    item: Json
    if kind == "custom":
        try:
            value = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError:
            value = None
        text = value.get("input") if isinstance(value, dict) else None
        item = {
            "type": "custom_tool_call",
            "id": new_id("ctc"),
            "call_id": call_id,
            "name": name,
            "input": text if isinstance(text, str) else arguments,
            "status": status,
        }
    else:
        item = {
            "type": "function_call",
            "id": new_id("fc"),
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
            "status": status,
        }
    if namespace is not None:
        item["namespace"] = namespace
    return item


def finished(response: Json, finish: str | None, usage: Json | None) -> Json:
    """``response`` completed (or incomplete, when the answer hit its token limit)."""
    response["usage"] = usage_of(usage)
    if finish == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    else:
        response["status"] = "completed"
        response["completed_at"] = int(time.time())
    return response


def response_of(completion: Json, base: Json, names: ToolNames) -> Json:
    """A whole ``chat.completion`` as the response ``base`` (a :func:`skeleton`)."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[Json] = []
    thinking = _reasoning(message)
    if thinking:
        output.append(reasoning_item(thinking))
    if message.get("content"):
        output.append(message_item(message["content"]))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        call_id = call.get("id") or new_id("call")
        item = call_item(
            call_id, function.get("name", ""), function.get("arguments", ""), names, "completed"
        )
        output.append(item)
    base["output"] = output
    return finished(base, choice.get("finish_reason"), completion.get("usage"))


def chat_turn(output: list[Json], names: ToolNames) -> list[Json]:
    """The response's output as chat messages (an assistant turn), to store for the next turn."""
    text = "".join(
        part.get("text", "")
        for item in output
        if item["type"] == "message"
        for part in item["content"]
    )
    calls = []
    for item in output:
        if item["type"] in ("function_call", "custom_tool_call"):
            arguments = item.get("arguments")
            if item["type"] == "custom_tool_call":
                arguments = orjson.dumps({"input": item["input"]}).decode()
            chat_name = names.chat_name(item["name"], item.get("namespace"))
            function = {"name": chat_name, "arguments": arguments}
            calls.append({"id": item["call_id"], "type": "function", "function": function})
    if not calls:
        return [{"role": "assistant", "content": text}] if text else []
    return [{"role": "assistant", "content": text or None, "tool_calls": calls}]


def error_code(exc: InterferenceError) -> str:
    """The ``response.failed`` error code Codex acts on."""
    if isinstance(exc, ContextLengthExceededError):
        return "context_length_exceeded"
    if isinstance(exc, RateLimitError):
        return "rate_limit_exceeded"
    return "server_error"
