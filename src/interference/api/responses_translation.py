"""OpenAI's Responses dialect to a chat request, for every provider that speaks chat.

``instructions`` become the system message; ``input`` items become chat messages: ``message``
items (``developer`` as system), ``function_call`` and ``custom_tool_call`` items as the
assistant's tool calls, their ``*_output`` items as ``tool`` messages; ``reasoning`` items and
items the gateway cannot use (``item_reference``, calls of OpenAI's hosted tools) are dropped.
The messages are then fitted for chat templates (:mod:`interference.api.chat_shape`).

Tools: ``function`` tools as functions; the functions of a ``namespace`` tool (Codex's groups)
flattened to ``<namespace>__<name>``; a ``custom`` (free-form) tool as a function of one string,
``input``. Their calls are named back on the way out (:class:`ToolNames`). Tools only OpenAI
runs (``web_search``, ``file_search``, ``image_generation``, ``tool_search``...) are left out,
with a warning the first time each type is seen: Codex sends ``web_search`` with every request,
and refusing it would refuse Codex.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from interference.api.chat_shape import fit_for_templates
from interference.errors import InvalidRequestError
from interference.wire.chat import ChatCompletionRequest
from interference.wire.responses import ResponsesRequest

logger = logging.getLogger(__name__)

Json = dict[str, Any]

_MAX_NAME = 64  # an OpenAI function name's length bound, which the engine's templates share
_warned: set[str] = set()  # tool types already warned about (a warning per type and process)
_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text"})


def _warn_once(kind: str) -> None:
    if kind not in _warned:
        _warned.add(kind)
        logger.warning("tools of type %r are not offered to models (only OpenAI runs them)", kind)


@dataclass
class ToolNames:
    """The chat function names of a request's tools and what each stands for."""

    #: chat name -> (namespace or None, the tool's own name, "function" or "custom")
    by_chat_name: dict[str, tuple[str | None, str, str]] = field(default_factory=dict)

    def add(self, namespace: str | None, name: str, kind: str) -> str:
        chat_name = f"{namespace}__{name}" if namespace else name
        if len(chat_name) > _MAX_NAME:  # shortened, kept unique by a digest of the whole
            digest = hashlib.sha256(chat_name.encode()).hexdigest()[:8]
            chat_name = f"{chat_name[: _MAX_NAME - 9]}_{digest}"
        self.by_chat_name[chat_name] = (namespace, name, kind)
        return chat_name

    def chat_name(self, name: str, namespace: str | None = None) -> str:
        """The chat name of a call in the input (the tool may no longer be offered)."""
        for chat_name, (ns, own, _) in self.by_chat_name.items():
            if own == name and ns == namespace:
                return chat_name
        return f"{namespace}__{name}" if namespace else name

    def origin(self, chat_name: str) -> tuple[str | None, str, str]:
        return self.by_chat_name.get(chat_name, (None, chat_name, "function"))


def _refuse(where: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"{where}: {message}", param=where)


def _function(tool: Json, where: str) -> Json:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise _refuse(f"{where}.name", "a function tool needs a name")
    function: Json = {"name": name, "parameters": tool.get("parameters") or {"type": "object"}}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    return function


def _custom(tool: Json, where: str) -> Json:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise _refuse(f"{where}.name", "a custom tool needs a name")
    about = "Its whole input is free text (not JSON), in `input`."
    syntax = (tool.get("format") or {}).get("definition")
    if isinstance(syntax, str):
        about += f" The input follows this grammar:\n{syntax}"
    description = tool.get("description") if isinstance(tool.get("description"), str) else ""
    parameters = {
        "type": "object",
        "properties": {"input": {"type": "string", "description": "the tool's input"}},
        "required": ["input"],
    }
    return {
        "name": name,
        "description": f"{description}\n\n{about}".strip(),
        "parameters": parameters,
    }


def chat_tools(tools: list[Json] | None) -> tuple[list[Json], ToolNames]:
    names = ToolNames()
    out: list[Json] = []

    def offer(function: Json, namespace: str | None, kind: str) -> None:
        function["name"] = names.add(namespace, function["name"], kind)
        out.append({"type": "function", "function": function})

    for i, tool in enumerate(tools or ()):
        kind = tool.get("type")
        if kind == "function":
            offer(_function(tool, f"tools.{i}"), None, "function")
        elif kind == "custom":
            offer(_custom(tool, f"tools.{i}"), None, "custom")
        elif kind == "namespace":
            namespace = tool.get("name")
            if not isinstance(namespace, str) or not namespace:
                raise _refuse(f"tools.{i}.name", "a namespace tool needs a name")
            for k, inner in enumerate(tool.get("tools") or ()):
                where = f"tools.{i}.tools.{k}"
                if inner.get("type", "function") == "function":
                    offer(_function(inner, where), namespace, "function")
                elif inner.get("type") == "custom":
                    offer(_custom(inner, where), namespace, "custom")
        else:
            _warn_once(str(kind))
    return out, names


def _text(content: Any, where: str) -> str:
    """The text of an output or of parts (other parts left out)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _refuse(where, "expected a string or a list of content parts")
    return "\n".join(
        str(p.get("text", ""))
        for p in content
        if isinstance(p, dict) and p.get("type") in _TEXT_PARTS
    )


def _parts(content: Any, where: str) -> str | list[Json]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _refuse(where, "expected a string or a list of content parts")
    parts: list[Json] = []
    for k, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS:
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image: Json = {"url": part["image_url"]}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_image":
            raise _refuse(f"{where}.{k}", "images by file_id are not supported: send image_url")
        else:
            logger.debug("a %s part of an input message is not translated", kind)
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _call(item: Json, where: str, names: ToolNames) -> Json:
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not call_id:
        raise _refuse(f"{where}.call_id", "a tool call needs its call_id")
    if not isinstance(name, str) or not name:
        raise _refuse(f"{where}.name", "a tool call needs its name")
    namespace = item.get("namespace") if isinstance(item.get("namespace"), str) else None
    if item["type"] == "custom_tool_call":
        arguments = orjson.dumps({"input": str(item.get("input", ""))}).decode()
    else:
        arguments = item.get("arguments", "")
        if not isinstance(arguments, str):
            raise _refuse(f"{where}.arguments", "expected a JSON string")
    function = {"name": names.chat_name(name, namespace), "arguments": arguments or "{}"}
    return {"id": call_id, "type": "function", "function": function}


def input_messages(request: ResponsesRequest, names: ToolNames) -> list[Json]:
    """The ``input`` as chat messages (before the template fitting)."""
    if isinstance(request.input, str):
        return [{"role": "user", "content": request.input}] if request.input else []
    out: list[Json] = []
    for i, item in enumerate(request.input):
        where = f"input.{i}"
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _refuse(f"{where}.role", "expected user, assistant, system or developer")
            content = item.get("content", "")
            if role == "assistant":
                out.append({"role": "assistant", "content": _text(content, f"{where}.content")})
            else:
                out.append({"role": role, "content": _parts(content, f"{where}.content")})
        elif kind in ("function_call", "custom_tool_call"):
            call = _call(item, where, names)
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                if not last.get("content"):
                    last["content"] = None
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise _refuse(f"{where}.call_id", "a tool output needs its call_id")
            output = _text(item.get("output", ""), f"{where}.output")
            out.append({"role": "tool", "tool_call_id": call_id, "content": output})
        else:
            logger.debug("an input item of type %r is not translated", kind)
    return out


def _tool_choice(choice: str | Json | None, names: ToolNames) -> str | Json | None:
    if choice is None or isinstance(choice, str):
        return choice if choice in ("auto", "none", "required") else None
    kind = choice.get("type")
    if kind in ("function", "custom") and isinstance(choice.get("name"), str):
        namespace = choice.get("namespace") if isinstance(choice.get("namespace"), str) else None
        chat_name = names.chat_name(choice["name"], namespace)
        if chat_name in names.by_chat_name:
            return {"type": "function", "function": {"name": chat_name}}
    if kind == "allowed_tools" and choice.get("mode") == "required":
        return "required"
    return None  # a hosted tool's choice, or a tool not offered: the model chooses


def _response_format(text: Json | None) -> Json | None:
    fmt = (text or {}).get("format") or {}
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        schema: Json = {"name": fmt.get("name") or "response", "schema": fmt.get("schema")}
        for key in ("strict", "description"):
            if key in fmt:
                schema[key] = fmt[key]
        return {"type": "json_schema", "json_schema": schema}
    return None


def chat_request(
    request: ResponsesRequest, history: list[Json], max_tokens: int
) -> tuple[ChatCompletionRequest, ToolNames, list[Json]]:
    """The chat request for ``request`` after ``history`` (the conversation of its
    ``previous_response_id``), with the tool names to answer with and the input's own messages
    (to store with the answer)."""
    tools, names = chat_tools(request.tools)
    given = input_messages(request, names)
    messages = list(history) + given
    if request.instructions:
        messages.insert(0, {"role": "system", "content": request.instructions})
    if not messages:
        messages = [{"role": "user", "content": ""}]  # Codex's probe: an empty input
    body: Json = {"model": request.model, "messages": fit_for_templates(messages)}
    if request.max_output_tokens is not None:
        body["max_tokens"] = min(request.max_output_tokens, max_tokens)
    if tools:
        body["tools"] = tools
        choice = _tool_choice(request.tool_choice, names)
        if choice is not None:
            body["tool_choice"] = choice
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    response_format = _response_format(request.text)
    if response_format is not None:
        body["response_format"] = response_format
    for name in ("temperature", "top_p", "user"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    try:
        return ChatCompletionRequest.model_validate(body), names, given
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = _field_of(first["loc"])
        raise _refuse(where, first["msg"].removeprefix("Value error, ")) from None


def _field_of(loc: tuple[int | str, ...]) -> str:
    """The request's field a chat request's error location stands for."""
    parts = [str(p) for p in loc]
    renamed = {"response_format": "text.format", "max_tokens": "max_output_tokens"}
    if parts[:1] == ["tools"]:
        return "tools"  # flattened: positions differ
    if parts[:1] == ["messages"]:
        return "input"
    return renamed.get(parts[0], ".".join(parts)) if parts else "the body"
