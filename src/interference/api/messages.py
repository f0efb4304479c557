"""Anthropic's Messages API in front of every provider: ``POST /v1/messages`` (also with
``?beta=true``) and ``POST /v1/messages/count_tokens``.

A request is translated into an OpenAI chat request (:mod:`interference.api.anthropic_translation`)
and routed like any other, so it reaches a local model, an OpenAI-compatible server, Gemini or
Anthropic itself, with fallbacks; the answer is translated back. Errors take Anthropic's
envelope (:mod:`interference.api.errors`).

A stream whose first token is slow to come (a long prompt read on a CPU) is answered at once
with ``message_start`` and then a ``ping`` every ``server.keepalive_s``, so that an agent's
idle timeout does not fire; an error after that arrives as an ``error`` event. A stream whose
first token comes sooner begins only then, so that a refusal (a prompt too long for the
model) is a real HTTP 400 that Claude Code acts on.

A model routed to an ``anthropic``-kind provider gets the request as the client wrote it, with
its ``anthropic-version`` and ``anthropic-beta`` headers, and the client gets Anthropic's answer
unchanged (:mod:`interference.providers.anthropic_passthrough`); fallbacks to providers of
other kinds are translated as above.

``count_tokens`` is answered here, without a model: Claude Code's editor extension sends dozens
at start-up. It counts about four characters per token of what the request carries (the usual
estimate; an exact count needs the model's tokenizer).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator, Awaitable
from typing import TYPE_CHECKING, TypeVar

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from interference.api.anthropic_translation import (
    PING,
    StreamTranslator,
    chat_messages,
    chat_request,
    chat_tools,
    message_of,
)
from interference.api.errors import error_response, stream_error
from interference.api.keepalive import Opening, open_within, release, ticks
from interference.api.limits import check_limits
from interference.api.record import RequestRecord, record_of
from interference.api.sse import EventStreamResponse
from interference.api.state import json_response, read_json_body, resolve_model, state_of
from interference.errors import InterferenceError, InvalidRequestError, ServerError
from interference.providers.anthropic import AnthropicProvider
from interference.providers.anthropic_passthrough import (
    PassedMessage,
    PassedMessageEvent,
    forwarded_headers,
)
from interference.providers.passthrough import with_model
from interference.wire.anthropic_messages import CountTokensRequest, MessagesRequest
from interference.wire.chunks import Batch, Reply

if TYPE_CHECKING:
    from interference.routing.table import Deployment

R = TypeVar("R", bound=CountTokensRequest)


async def _parse(request: Request, model: type[R]) -> tuple[R, bytes]:
    """The request, and its body."""
    body = await read_json_body(request, state_of(request).config.server.max_body_bytes)
    try:
        return model.model_validate_json(body), body
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "the body"
        message = first["msg"].removeprefix("Value error, ")
        raise InvalidRequestError(f"{where}: {message}", param=where) from None


async def messages(request: Request) -> Response:
    record = record_of(request.scope)
    try:
        return await _answer(request, record)
    except InterferenceError as exc:
        record.error, record.error_message = exc.code, exc.message
        return error_response(exc, "anthropic")


async def _answer(request: Request, record: RequestRecord) -> Response:
    state = state_of(request)
    limits = state.config.server.limits
    parsed, body = await _parse(request, MessagesRequest)
    chat = chat_request(parsed, limits.max_tokens)
    check_limits(chat, limits, len(body))
    record.model, record.stream = parsed.model, bool(parsed.stream)
    await resolve_model(request, parsed.model, chat.token_limit)  # 404, 403, 429 before any work
    headers = forwarded_headers(request.headers)

    def upstream_body(deployment: Deployment) -> bytes:
        return with_model(body, parsed.model, deployment.model)

    if not parsed.stream:

        def reply(deployment: Deployment) -> Awaitable[Reply]:
            provider = deployment.provider
            if isinstance(provider, AnthropicProvider):
                return provider.pass_message(upstream_body(deployment), headers)
            return provider.chat_reply(chat, deployment.model)

        answer = await state.router.call(chat, reply)
        record.deployment, record.attempts = answer.deployment.name, answer.attempts
        counts = answer.result.token_counts()
        if counts:
            record.prompt_tokens, record.completion_tokens = counts
        record.cached_tokens = answer.result.cached_tokens()
        if isinstance(answer.result, PassedMessage):
            return json_response(answer.result.raw)
        message = message_of(orjson.loads(answer.result.to_json()), parsed.model)
        return json_response(orjson.dumps(message))

    def batches(deployment: Deployment) -> AsyncGenerator[Batch, None]:
        provider = deployment.provider
        if isinstance(provider, AnthropicProvider):
            return provider.pass_events(upstream_body(deployment), headers)
        return provider.chat_batches(chat, deployment.model)

    started = time.perf_counter()
    opening = await open_within(state.router.stream(chat, batches), state.config.server.keepalive_s)
    if opening.done():
        record.stream_opened(opening.result(), started)
    translator = StreamTranslator(parsed.model)
    keepalive = state.config.server.keepalive_s
    relay = _relay(record, translator, opening, started, keepalive)
    return EventStreamResponse(relay, release=lambda: release(opening))


def _passed_through(opening: Opening) -> bool:
    """Whether the stream, already open, comes from Anthropic as it is."""
    if not opening.done() or opening.exception() is not None:
        return False
    return isinstance(opening.result().deployment.provider, AnthropicProvider)


async def _relay(
    record: RequestRecord,
    translator: StreamTranslator,
    opening: Opening,
    started: float,
    keepalive: float,
) -> AsyncGenerator[bytes, None]:
    """The stream in Anthropic's events: translated from chat chunks, or passed through. When
    the first output is slow our ``message_start`` and pings go first, and a passed-through
    stream's own ``message_start`` is then left out."""
    record.outcome = "client_closed"  # unless the stream gets to its end
    started_here = not _passed_through(opening)
    if started_here:
        yield translator.start()
    passed = False
    try:
        async for _ in ticks(opening, keepalive):
            yield PING
        if record.deployment is None:
            record.stream_opened(opening.result(), started)
        streamed = opening.result()
        async for batch in streamed.chunks:
            events = b""
            for chunk in batch:
                record.count(chunk)
                if isinstance(chunk, PassedMessageEvent):
                    passed = True
                    if not (started_here and chunk.type == "message_start"):
                        events += chunk.frame()
                else:
                    events += translator.feed(orjson.loads(chunk.to_json()))
            if events:
                yield events
        record.outcome = "ok"
    except InterferenceError as exc:
        record.outcome, record.error, record.error_message = "error", exc.code, exc.message
        yield stream_error(exc, "anthropic")
        return
    except Exception as exc:
        record.outcome, record.error, record.exception = "error", "internal_error", exc
        yield stream_error(ServerError("The stream ended because of a server error."), "anthropic")
        return
    finally:
        await release(opening)
    if not passed:  # a passed-through stream ended with its own message_stop
        yield translator.end()


def _estimate(text: str) -> int:
    return math.ceil(len(text) / 4)


def estimate_tokens(request: CountTokensRequest) -> int:
    """About four characters per token of the messages and tools, plus four per message for
    the chat template's role markers."""
    total = 0
    for message in chat_messages(request):
        total += 4 + _estimate(orjson.dumps(message.get("content") or "").decode())
        for call in message.get("tool_calls") or ():
            total += _estimate(call["function"]["name"] + call["function"]["arguments"])
    for tool in chat_tools(request):
        total += _estimate(orjson.dumps(tool["function"]).decode())
    return total


async def count_tokens(request: Request) -> Response:
    try:
        parsed, _ = await _parse(request, CountTokensRequest)
        await resolve_model(request, parsed.model, reserve=False)  # answered here: costs nothing
    except InterferenceError as exc:
        return error_response(exc, "anthropic")
    return json_response(orjson.dumps({"input_tokens": estimate_tokens(parsed)}))
