"""Anthropic's Messages dialect to OpenAI's chat and back, for every provider that speaks chat.

The request: the ``system`` prompt becomes the first message; ``tool_result`` blocks become
``tool`` messages right after the assistant turn that called them (where OpenAI wants them);
``tool_use`` blocks become the assistant's ``tool_calls``; images become ``image_url`` parts;
thinking blocks of earlier turns are dropped (Anthropic drops them from the context too). A
``role: "system"`` message in the middle of the conversation (Claude Code sends them) becomes a
user turn, and consecutive user turns are merged (:mod:`interference.api.chat_shape`). Client
tools become functions; server tools (web search, code execution...), which only Anthropic's
servers run, are left out.

The answer: text and ``tool_use`` blocks, a ``thinking`` block first where the model reasoned
(``reasoning_content``), and the finish reason in Anthropic's words. A stream is translated
chunk by chunk in Anthropic's order (:class:`StreamTranslator`).

What cannot be said in chat is not: a ``stop_sequence`` stop reads ``end_turn`` (a chat answer
does not say which stop string ended it), and a thinking block's ``signature`` is empty (only
Anthropic signs its models' thinking).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import orjson
from pydantic import ValidationError

from interference.api.chat_shape import fit_for_templates
from interference.errors import InvalidRequestError
from interference.wire.anthropic_messages import (
    CountTokensRequest,
    ImageBlock,
    InputMessage,
    MessagesRequest,
    StopReason,
    ToolResultBlock,
    ToolUseBlock,
)
from interference.wire.chat import ChatCompletionRequest

logger = logging.getLogger(__name__)

STOP_REASONS: dict[str | None, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_MAX_STOPS = 4  # what an OpenAI chat request takes

Json = dict[str, Any]


# --- request: Anthropic -> OpenAI chat --------------------------------------------------------


def text_of(content: str | list[Json]) -> str:
    """The text of a string or of a list of blocks (its text blocks, one per line)."""
    if isinstance(content, str):
        return content
    return "\n".join(str(b.get("text", "")) for b in content if b.get("type") == "text")


def _user_parts(blocks: list[Json]) -> list[Json]:
    parts: list[Json] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            source = ImageBlock.model_validate(block).source
            url = (
                source.url
                if source.type == "url"
                else f"data:{source.media_type};base64,{source.data}"
            )
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind != "tool_result":
            logger.debug("a %s block of a user message is not translated", kind)
    return parts


def _assistant(blocks: list[Json]) -> Json:
    text = "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
    calls = []
    for block in blocks:
        if block.get("type") == "tool_use":
            use = ToolUseBlock.model_validate(block)
            arguments = orjson.dumps(use.input).decode()
            calls.append(
                {
                    "id": use.id,
                    "type": "function",
                    "function": {"name": use.name, "arguments": arguments},
                }
            )
    if not calls:
        return {"role": "assistant", "content": text}
    return {"role": "assistant", "content": text or None, "tool_calls": calls}


def _turn(message: InputMessage) -> list[Json]:
    content = message.content
    if message.role == "system":
        return [{"role": "system", "content": text_of(content)}]
    if isinstance(content, str):
        return [{"role": message.role, "content": content}]
    if message.role == "assistant":
        return [_assistant(content)]
    out: list[Json] = []
    for block in content:
        if block.get("type") == "tool_result":
            result = ToolResultBlock.model_validate(block)
            text = text_of(result.content)
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": result.tool_use_id,
                    "content": f"Error: {text}" if result.is_error else text,
                }
            )
    parts = _user_parts(content)
    if parts or not out:
        out.append({"role": "user", "content": parts or ""})
    return out


def chat_messages(request: CountTokensRequest) -> list[Json]:
    """The conversation as OpenAI chat messages."""
    out: list[Json] = []
    if request.system:
        out.append({"role": "system", "content": text_of(request.system)})
    for message in request.messages:
        out.extend(_turn(message))
    return fit_for_templates(out)


def chat_tools(request: CountTokensRequest) -> list[Json]:
    """Client tools as OpenAI functions (server tools left out)."""
    functions = []
    for tool in request.tools or ():
        if "input_schema" not in tool or tool.get("type") not in (None, "custom"):
            logger.debug("the server tool %r is not offered to the model", tool.get("type"))
            continue
        function: Json = {"name": tool.get("name"), "parameters": tool["input_schema"]}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        functions.append({"type": "function", "function": function})
    return functions


def _tool_choice(request: MessagesRequest, tools: list[Json], body: Json) -> None:
    choice = request.tool_choice
    if choice is None:
        return
    if choice.type == "tool":
        if choice.name in {t["function"]["name"] for t in tools}:
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:  # a server tool, left out: the model chooses among the others
            logger.debug("tool_choice names %r, which is not offered", choice.name)
    elif choice.type == "any":
        body["tool_choice"] = "required"
    elif choice.type == "none":
        body["tool_choice"] = "none"
    if choice.disable_parallel_tool_use:
        body["parallel_tool_calls"] = False


def chat_request(request: MessagesRequest, max_tokens: int) -> ChatCompletionRequest:
    """The OpenAI chat request for ``request``, its ``max_tokens`` clamped to ``max_tokens``
    (agents ask for 32,000 whatever the model)."""
    body: Json = {
        "model": request.model,
        "messages": chat_messages(request),
        "max_tokens": min(request.max_tokens, max_tokens),
    }
    tools = chat_tools(request)
    if tools:
        body["tools"] = tools
        _tool_choice(request, tools, body)
    if request.stop_sequences:
        body["stop"] = request.stop_sequences[:_MAX_STOPS]
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    user = (request.metadata or {}).get("user_id")
    if isinstance(user, str):
        body["user"] = user
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = _field_of(first["loc"])
        raise InvalidRequestError(
            f"{where}: {first['msg'].removeprefix('Value error, ')}", param=where
        ) from None


def _field_of(loc: tuple[int | str, ...]) -> str:
    """The request's field a chat request's error location stands for (the positions of
    messages differ between the two: only ``messages`` is named)."""
    parts = [str(p) for p in loc]
    if parts[:1] == ["tools"] and len(parts) >= 4:  # tools.N.function.function.X
        rest = parts[4:] if parts[2] == parts[3] == "function" else parts[3:]
        renamed = {"parameters": "input_schema"}
        return ".".join(["tools", parts[1], *(renamed.get(p, p) for p in rest[:1]), *rest[1:]])
    if parts[:1] in (["messages"], ["tool_choice"]):
        return parts[0]
    return ".".join(parts) or "the body"


# --- answer: OpenAI chat -> Anthropic ----------------------------------------------------------


def _input_of(arguments: str) -> Json:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": arguments}  # a model's malformed call, kept for the client to see
    return value if isinstance(value, dict) else {"_value": value}


def usage_of(usage: Json | None) -> dict[str, int]:
    """OpenAI's usage in Anthropic's words (cached prompt tokens apart, as Anthropic counts)."""
    usage = usage or {}
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return {
        "input_tokens": int(usage.get("prompt_tokens") or 0) - cached,
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def _reasoning(fields: Json) -> str | None:
    value = fields.get("reasoning_content") or fields.get("reasoning")
    return value if isinstance(value, str) else None


def _message_id() -> str:
    return f"msg_{os.urandom(12).hex()}"


def message_of(completion: Json, model: str) -> Json:
    """A ``chat.completion`` as an Anthropic ``message``."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[Json] = []
    thinking = _reasoning(message)
    if thinking:
        content.append({"type": "thinking", "thinking": thinking, "signature": ""})
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{os.urandom(12).hex()}",
                "name": function.get("name", ""),
                "input": _input_of(function.get("arguments", "")),
            }
        )
    return {
        "id": _message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason"), "end_turn"),
        "stop_sequence": None,
        "usage": usage_of(completion.get("usage")),
    }


def frame(name: str, data: Json) -> bytes:
    """One server-sent event, Anthropic's way: its name on an ``event:`` line."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


PING = frame("ping", {"type": "ping"})


class StreamTranslator:
    """OpenAI chat chunks in, Anthropic's events out, in Anthropic's order: one
    ``message_start``; each block's ``content_block_start`` before its deltas and its
    ``content_block_stop`` after them (a thinking block's ``signature_delta`` last); then
    ``message_delta`` with the stop reason and the usage, and ``message_stop``."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.block = -1  # index of the latest content block
        self.open_kind = ""  # of the open block: "thinking", "text", "tool:<call index>"
        self.finish: str | None = None
        self.usage: Json | None = None

    def start(self) -> bytes:
        message: Json = {
            "id": _message_id(),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_of(None),
        }
        return frame("message_start", {"type": "message_start", "message": message})

    def _open(self, kind: str, block: Json) -> bytes:
        out = self._close()
        self.block += 1
        self.open_kind = kind
        start = {"type": "content_block_start", "index": self.block, "content_block": block}
        return out + frame("content_block_start", start)

    def _close(self) -> bytes:
        if not self.open_kind:
            return b""
        out = b""
        if self.open_kind == "thinking":
            out = self._delta({"type": "signature_delta", "signature": ""})
        self.open_kind = ""
        stop = {"type": "content_block_stop", "index": self.block}
        return out + frame("content_block_stop", stop)

    def _delta(self, delta: Json) -> bytes:
        event = {"type": "content_block_delta", "index": self.block, "delta": delta}
        return frame("content_block_delta", event)

    def _tool_calls(self, calls: list[Json]) -> bytes:
        out = b""
        for call in calls:
            kind = f"tool:{call.get('index', 0)}"
            function = call.get("function") or {}
            if self.open_kind != kind:
                block: Json = {
                    "type": "tool_use",
                    "id": call.get("id") or f"toolu_{os.urandom(12).hex()}",
                    "name": function.get("name") or "",
                    "input": {},
                }
                out += self._open(kind, block)
            if function.get("arguments"):
                partial = {"type": "input_json_delta", "partial_json": function["arguments"]}
                out += self._delta(partial)
        return out

    def feed(self, chunk: Json) -> bytes:
        """The events for one chat chunk (possibly none)."""
        out = b""
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # Anthropic has one answer per request
            delta = choice.get("delta") or {}
            thinking = _reasoning(delta)
            if thinking:
                if self.open_kind != "thinking":
                    out += self._open("thinking", {"type": "thinking", "thinking": ""})
                out += self._delta({"type": "thinking_delta", "thinking": thinking})
            text = delta.get("content")
            if text:
                if self.open_kind != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                out += self._delta({"type": "text_delta", "text": text})
            if delta.get("tool_calls"):
                out += self._tool_calls(delta["tool_calls"])
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def end(self) -> bytes:
        """The open block's end, the stop reason with the usage, and ``message_stop``."""
        stop = {"stop_reason": STOP_REASONS.get(self.finish, "end_turn"), "stop_sequence": None}
        usage = usage_of(self.usage)
        out = self._close()
        out += frame("message_delta", {"type": "message_delta", "delta": stop, "usage": usage})
        return out + frame("message_stop", {"type": "message_stop"})
