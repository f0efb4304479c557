"""Per-request limits: how many messages, how much input text, how many tokens to generate.

The body size is bounded while it is read (:func:`interference.api.state.read_json_body`);
these checks run on the parsed request, before any work, and each breach is a 400 whose
``code`` names the limit and whose message says the figure and the bound.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from interference.config import LimitsConfig
from interference.errors import InvalidRequestError
from interference.wire.chat import ChatCompletionRequest
from interference.wire.completions import CompletionRequest
from interference.wire.embeddings import EmbeddingRequest

#: keys whose string values are tags, not text
_TAGS = frozenset({"role", "type"})


def _texts(value: Any) -> Iterable[str]:
    """The text inside a JSON-like value: contents, parts, names and tool arguments (the
    ``role`` and ``type`` tags left out)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in _TAGS:
                yield from _texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item)


def _input_chars(request: ChatCompletionRequest | CompletionRequest | EmbeddingRequest) -> int:
    if isinstance(request, ChatCompletionRequest):
        total = 0
        for message in request.messages:
            total += sum(len(text) for text in _texts(message.model_dump(exclude_none=True)))
        return total
    prompt = request.prompt if isinstance(request, CompletionRequest) else request.input
    if isinstance(prompt, str):
        return len(prompt)
    # token arrays count one per token: a token is at least a character of text
    return sum(len(item) if isinstance(item, str | list) else 1 for item in prompt)


def check_limits(
    request: ChatCompletionRequest | CompletionRequest | EmbeddingRequest,
    limits: LimitsConfig,
    body_bytes: int,
) -> None:
    """Raise :class:`InvalidRequestError` when ``request`` asks for more than ``limits`` allow.

    ``body_bytes``, the size of the JSON it came in, bounds its characters of text: below the
    limit they are not counted."""
    if isinstance(request, ChatCompletionRequest) and len(request.messages) > limits.max_messages:
        raise InvalidRequestError(
            f"Too many messages: {len(request.messages)}; this server accepts at most "
            f"{limits.max_messages} per request.",
            param="messages",
            code="too_many_messages",
        )
    chars = _input_chars(request) if body_bytes > limits.max_input_chars else 0
    if chars > limits.max_input_chars:
        param = {ChatCompletionRequest: "messages", CompletionRequest: "prompt"}.get(
            type(request), "input"
        )
        raise InvalidRequestError(
            f"The input is too long: {chars} characters; this server accepts at most "
            f"{limits.max_input_chars} per request.",
            param=param,
            code="input_too_long",
        )
    if isinstance(request, EmbeddingRequest):
        return
    asked = {
        "max_tokens": request.max_tokens,
        "max_completion_tokens": getattr(request, "max_completion_tokens", None),
    }
    for param, value in asked.items():
        if value is not None and value > limits.max_tokens:
            raise InvalidRequestError(
                f"Invalid value for '{param}': {value} is more than this server's limit of "
                f"{limits.max_tokens} tokens.",
                param=param,
                code="max_tokens_too_large",
            )
