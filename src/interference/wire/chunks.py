"""What the routes need from an answer, and answers passed on as the upstream wrote them.

Two protocols decouple the routes from how an answer is held:

- :class:`Reply`: a whole (non-streamed) chat or text completion;
- :class:`StreamChunk`: one streamed chunk.

The pydantic wire models (``ChatCompletion``, ``ChatCompletionChunk``, ``Completion``) meet them,
and so do :class:`RawReply` and :class:`RawChunk`: an OpenAI-compatible upstream's JSON object,
checked against the spec's shape by hand (a few dict look-ups instead of a pydantic validation)
and sent on with only the fields a gateway must rewrite: ``id``, ``created`` and ``model`` become
ours, ``system_fingerprint`` (the upstream's, not ours) is dropped, and fields the spec requires
but an upstream left out (``object``, a choice's ``finish_reason``) are filled in. Everything else,
including fields the spec does not know, goes out as it came.

A malformed object raises ``ValueError``; providers turn that into a retryable upstream error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol, Self

import orjson

_CHAT_FINISH = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
_TEXT_FINISH = frozenset({"stop", "length", "content_filter"})

Kind = Literal["chat", "text"]


class StreamChunk(Protocol):
    """A streamed chunk as the router and the SSE relay handle it."""

    def has_output(self) -> bool:
        """Whether it carries output: text, a tool call, a refusal, a finish reason or usage
        (after such a chunk a failure can no longer fall back to another deployment)."""

    def has_choices(self) -> bool: ...

    def completion_tokens(self) -> int | None:
        """The usage's completion tokens, when this chunk carries usage."""

    def prompt_tokens(self) -> int | None:
        """The usage's prompt tokens, when this chunk carries them."""

    def cached_tokens(self) -> int | None:
        """Of the prompt tokens, those read from the upstream's prompt cache (when this chunk
        carries usage that says)."""

    def stamp(self, cid: str, created: int, model: str) -> None:
        """Make it ours: our id and timestamp, the model name the client asked for."""

    def drop_usage(self) -> None: ...

    def to_json(self) -> bytes: ...


class Reply(Protocol):
    """A whole chat or text completion as the routes handle it."""

    def token_counts(self) -> tuple[int, int] | None:
        """``(prompt_tokens, completion_tokens)`` when the answer has usage."""

    def cached_tokens(self) -> int | None:
        """Of the prompt tokens, those read from the upstream's prompt cache."""

    def stamp(self, cid: str, created: int, model: str) -> None: ...

    def to_json(self) -> bytes: ...


#: the chunks that arrived together, relayed in one write
Batch = Sequence[StreamChunk]


def cached_of(usage: Any) -> int | None:
    """``usage.prompt_tokens_details.cached_tokens`` of an OpenAI usage object, if a count."""
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) else None


def _fail(what: str) -> ValueError:
    return ValueError(f"malformed upstream {what}")


def _optional_str(obj: dict[str, Any], key: str) -> None:
    value = obj.get(key)
    if value is not None and type(value) is not str:
        raise _fail(key)


def _check_usage(usage: Any) -> None:
    if usage is None:
        return
    if type(usage) is not dict:
        raise _fail("usage")
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        if key in usage and type(usage[key]) is not int:
            raise _fail(f"usage.{key}")


def _check_tool_calls(calls: Any) -> None:
    if type(calls) is not list:
        raise _fail("tool_calls")
    for call in calls:
        if type(call) is not dict or type(call.get("index")) is not int:
            raise _fail("tool call")
        _optional_str(call, "id")
        if call.get("type") not in (None, "function"):
            raise _fail("tool call type")
        function = call.get("function")
        if function is not None:
            if type(function) is not dict:
                raise _fail("tool call function")
            _optional_str(function, "name")
            _optional_str(function, "arguments")


def _check_delta(delta: Any) -> None:
    if type(delta) is not dict:
        raise _fail("delta")
    if delta.get("role") not in (None, "assistant"):
        raise _fail("delta role")
    _optional_str(delta, "content")
    _optional_str(delta, "refusal")
    _optional_str(delta, "reasoning_content")
    _optional_str(delta, "reasoning")
    if delta.get("tool_calls") is not None:
        _check_tool_calls(delta["tool_calls"])


def _check_choices(data: dict[str, Any], kind: Kind, streamed: bool) -> list[dict[str, Any]]:
    choices = data.get("choices")
    if type(choices) is not list:
        raise _fail("choices")
    finishes = _CHAT_FINISH if kind == "chat" else _TEXT_FINISH
    for choice in choices:
        if type(choice) is not dict or type(choice.get("index")) is not int:
            raise _fail("choice")
        finish = choice.setdefault("finish_reason", None)
        if finish is not None and finish not in finishes:
            raise _fail("finish_reason")
        if choice.get("logprobs") is not None and type(choice["logprobs"]) is not dict:
            raise _fail("logprobs")
        if kind == "text":
            if type(choice.get("text")) is not str:
                raise _fail("choice text")
            choice.setdefault("logprobs", None)
            if finish is None and not streamed:
                choice["finish_reason"] = "stop"
        elif streamed:
            delta = choice.get("delta")
            # the usual delta, {"content": "..."}, checked without a call
            if type(delta) is not dict or len(delta) != 1 or type(delta.get("content")) is not str:
                _check_delta(delta)
        else:
            _check_message(choice.get("message"))
            choice.setdefault("logprobs", None)
            if finish is None:  # required in a whole answer; an upstream that ended said so
                choice["finish_reason"] = "stop"
    return choices


def _check_message(message: Any) -> None:
    if type(message) is not dict or message.get("role", "assistant") != "assistant":
        raise _fail("message")
    message["role"] = "assistant"
    _optional_str(message, "content")
    _optional_str(message, "refusal")
    message.setdefault("content", None)
    message.setdefault("refusal", None)
    calls = message.get("tool_calls")
    if calls is not None:
        if type(calls) is not list:
            raise _fail("tool_calls")
        for call in calls:
            function = call.get("function") if type(call) is dict else None
            if (
                type(function) is not dict
                or type(call.get("id")) is not str
                or type(function.get("name")) is not str
                or type(function.get("arguments")) is not str
            ):
                raise _fail("tool call")
            call.setdefault("type", "function")


class _Raw:
    __slots__ = ("data",)
    data: dict[str, Any]

    def __init__(self, data: dict[str, Any], kind: Kind) -> None:
        raise NotImplementedError  # each subclass checks its shape and keeps ``data``

    @classmethod
    def chat(cls, data: dict[str, Any]) -> Self:
        return cls(data, "chat")

    @classmethod
    def text(cls, data: dict[str, Any]) -> Self:
        return cls(data, "text")

    def stamp(self, cid: str, created: int, model: str) -> None:
        data = self.data
        data["id"] = cid
        data["created"] = created
        data["model"] = model
        data.pop("system_fingerprint", None)

    def to_json(self) -> bytes:
        return orjson.dumps(self.data)


class RawChunk(_Raw):
    """One streamed chunk (``chat.completion.chunk`` or a ``text_completion`` chunk) as the
    upstream sent it."""

    __slots__ = ("_kind",)

    def __init__(self, data: dict[str, Any], kind: Kind) -> None:
        _check_choices(data, kind, streamed=True)
        if "usage" in data:
            _check_usage(data["usage"])
        data["object"] = "chat.completion.chunk" if kind == "chat" else "text_completion"
        self.data = data
        self._kind = kind

    def has_output(self) -> bool:
        data = self.data
        if data.get("usage") is not None:
            return True
        for choice in data["choices"]:
            if choice["finish_reason"]:
                return True
            if self._kind == "text":
                if choice["text"]:
                    return True
                continue
            delta = choice["delta"]
            if delta.get("content") or delta.get("tool_calls") or delta.get("refusal"):
                return True
            if delta.get("reasoning_content") or delta.get("reasoning"):  # a model's thinking
                return True
        return False

    def has_choices(self) -> bool:
        return bool(self.data["choices"])

    def completion_tokens(self) -> int | None:
        usage = self.data.get("usage")
        return None if usage is None else usage.get("completion_tokens", 0)

    def prompt_tokens(self) -> int | None:
        usage = self.data.get("usage")
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return tokens if isinstance(tokens, int) else None

    def cached_tokens(self) -> int | None:
        return cached_of(self.data.get("usage"))

    def drop_usage(self) -> None:
        self.data.pop("usage", None)


class RawReply(_Raw):
    """A whole ``chat.completion`` or ``text_completion`` as the upstream sent it."""

    __slots__ = ()

    def __init__(self, data: dict[str, Any], kind: Kind) -> None:
        _check_choices(data, kind, streamed=False)
        _check_usage(data.get("usage"))
        data["object"] = "chat.completion" if kind == "chat" else "text_completion"
        self.data = data

    def token_counts(self) -> tuple[int, int] | None:
        usage = self.data.get("usage")
        if usage is None:
            return None
        return usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)

    def cached_tokens(self) -> int | None:
        return cached_of(self.data.get("usage"))
