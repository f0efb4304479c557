"""OpenAI's Responses API in front of every provider: ``POST /v1/responses``, and ``GET`` and
``DELETE /v1/responses/{id}`` (with ``/input_items``) for the responses it stored.

A request is translated into a chat request (:mod:`interference.api.responses_translation`),
after the conversation of its ``previous_response_id`` when it has one, and routed like any
other; the answer is translated back (:mod:`interference.api.responses_output`). A response is
stored unless the request says ``store: false`` (Codex does) or the server keeps none
(``server.response_store``); an unknown ``previous_response_id`` is a 400 naming it, never
ignored. Errors before a stream are OpenAI's error objects; after it began, ``response.failed``.
A stream whose first token is slow to come begins with ``response.created`` and
``response.in_progress`` and then sends SSE comments as keep-alives
(:mod:`interference.api.keepalive`).

A deployment of an ``openai``-kind provider configured with ``responses: true`` gets the request
as the client wrote it, and the client its answer unchanged
(:mod:`interference.providers.responses_passthrough`); the upstream then keeps ``store`` and
``previous_response_id`` itself, so a ``previous_response_id`` unknown here is left to it (a
translated fallback still refuses it). For a model with such a deployment a slow stream sends
only SSE comments until it knows which deployment answers.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from interference.api.keepalive import Opening, open_within, release, ticks
from interference.api.limits import check_limits
from interference.api.record import RequestRecord, record_of
from interference.api.responses_output import (
    chat_turn,
    error_code,
    new_id,
    response_of,
    skeleton,
)
from interference.api.responses_stream import ResponseEvents
from interference.api.responses_translation import chat_request
from interference.api.sse import EventStreamResponse
from interference.api.state import (
    AppState,
    json_response,
    read_model,
    resolve_model,
    state_of,
)
from interference.errors import InterferenceError, InvalidRequestError, NotFoundError, ServerError
from interference.providers.openai import OpenAIProvider
from interference.providers.passthrough import with_model
from interference.providers.responses_passthrough import PassedResponse, PassedResponseEvent
from interference.wire.chat import ChatCompletionRequest
from interference.wire.chunks import Batch, Reply
from interference.wire.responses import ResponsesRequest

if TYPE_CHECKING:
    from interference.routing.table import Deployment

Json = dict[str, Any]
KEEPALIVE = b": keep-alive\n\n"  # an SSE comment: clients skip it, proxies see traffic


async def _parse(request: Request) -> tuple[ResponsesRequest, bytes]:
    return await read_model(request, ResponsesRequest)


def _history(state: AppState, request: ResponsesRequest) -> list[Json]:
    previous = request.previous_response_id
    if previous is None:
        return []
    stored = state.responses.get(previous) if state.responses is not None else None
    if stored is None:
        why = "" if state.responses is not None else " (this server stores no responses)"
        raise InvalidRequestError(
            f"Previous response with id '{previous}' not found{why}.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return stored.conversation


def _input_items(request: ResponsesRequest) -> list[Json]:
    """The input as items with ids, as ``/input_items`` lists them."""
    if isinstance(request.input, str):
        part = {"type": "input_text", "text": request.input}
        items: list[Json] = [{"type": "message", "role": "user", "content": [part]}]
    else:
        items = [dict(item) for item in request.input]
    for item in items:
        item.setdefault("id", new_id("msg" if item.get("type", "message") == "message" else "item"))
    return items


class _Turn:
    """What a response needs to be stored once it is done."""

    def __init__(self, state: AppState, request: ResponsesRequest, history: list[Json]) -> None:
        self.state, self.request, self.history = state, request, history
        self.given: list[Json] = []

    def store(self, response: Json, names: Any) -> None:
        store = self.state.responses
        if store is None or self.request.store is False:
            return
        conversation = [*self.history, *self.given, *chat_turn(response["output"], names)]
        store.put(response, conversation, _input_items(self.request))


def _passes(deployment: Deployment) -> bool:
    provider = deployment.provider
    return isinstance(provider, OpenAIProvider) and provider.passes_responses


async def create_response(request: Request) -> Response:
    state = state_of(request)
    limits = state.config.server.limits
    parsed, body = await _parse(request)
    record = record_of(request.scope)
    record.model, record.stream = parsed.model, bool(parsed.stream)
    model = await resolve_model(request, parsed.model, parsed.max_output_tokens)
    passing = any(_passes(d) for d in model.deployments)
    unknown_previous: InvalidRequestError | None = None
    try:
        history = _history(state, parsed)
    except InvalidRequestError as exc:
        if not passing:
            raise
        history, unknown_previous = [], exc  # perhaps the upstream's: it answers for it
    turn = _Turn(state, parsed, history)
    chat, names, turn.given = chat_request(parsed, turn.history, limits.max_tokens)
    check_limits(chat, limits, len(body))

    def translated(deployment: Deployment) -> ChatCompletionRequest:
        if unknown_previous is not None:
            raise unknown_previous
        return chat

    def upstream_body(deployment: Deployment) -> bytes:
        return with_model(body, parsed.model, deployment.model)

    base = skeleton(parsed, new_id("resp"), int(time.time()))
    if not parsed.stream:

        async def reply(deployment: Deployment) -> Reply:
            provider = deployment.provider
            if isinstance(provider, OpenAIProvider) and provider.passes_responses:
                return await provider.pass_response(upstream_body(deployment))
            return await provider.chat_reply(translated(deployment), deployment.model)

        answer = await state.router.call(chat, reply)
        record.deployment, record.attempts = answer.deployment.name, answer.attempts
        counts = answer.result.token_counts()
        if counts:
            record.prompt_tokens, record.completion_tokens = counts
        record.cached_tokens = answer.result.cached_tokens()
        if isinstance(answer.result, PassedResponse):
            return json_response(answer.result.raw)
        response = response_of(orjson.loads(answer.result.to_json()), base, names)
        turn.store(response, names)
        return json_response(orjson.dumps(response))

    def batches(deployment: Deployment) -> AsyncGenerator[Batch, None]:
        provider = deployment.provider
        if isinstance(provider, OpenAIProvider) and provider.passes_responses:
            return provider.pass_response_events(upstream_body(deployment))
        return provider.chat_batches(translated(deployment), deployment.model)

    started = time.perf_counter()
    keepalive = state.config.server.keepalive_s
    opening = await open_within(state.router.stream(chat, batches), keepalive)
    if opening.done():
        record.stream_opened(opening.result(), started)
    events = ResponseEvents(base, names)
    relay = _relay(record, events, opening, started, keepalive, turn, early_start=not passing)
    return EventStreamResponse(relay, release=lambda: release(opening))


def _passed_through(opening: Opening) -> bool:
    if not opening.done() or opening.exception() is not None:
        return False
    return _passes(opening.result().deployment)


async def _relay(
    record: RequestRecord,
    events: ResponseEvents,
    opening: Opening,
    started: float,
    keepalive: float,
    turn: _Turn,
    *,
    early_start: bool,
) -> AsyncGenerator[bytes, None]:
    """The stream in Responses events: translated from chat chunks (``response.created`` at
    once when ``early_start``, else once the stream opened), or passed through as it came."""
    record.outcome = "client_closed"  # unless the stream gets to its end
    started_here = early_start
    if started_here:
        yield events.start()
    passed = False
    try:
        async for _ in ticks(opening, keepalive):
            yield KEEPALIVE
        if record.deployment is None:
            record.stream_opened(opening.result(), started)
        if not started_here and not _passed_through(opening):
            started_here = True
            yield events.start()
        async for batch in opening.result().chunks:
            out = b""
            for chunk in batch:
                record.count(chunk)
                if isinstance(chunk, PassedResponseEvent):
                    passed = True
                    out += chunk.frame()
                else:
                    out += events.feed(orjson.loads(chunk.to_json()))
            if out:
                yield out
        record.outcome = "ok"
    except InterferenceError as exc:
        record.outcome, record.error, record.error_message = "error", exc.code, exc.message
        if not started_here:
            yield events.start()
        yield events.failed(error_code(exc), exc.message)
        return
    except Exception as exc:
        record.outcome, record.error, record.exception = "error", "internal_error", exc
        failure = ServerError("The stream ended because of a server error.")
        if not started_here:
            yield events.start()
        yield events.failed("server_error", failure.message)
        return
    finally:
        await release(opening)
    if passed:  # the upstream's stream ended with its own last event, and it stores
        return
    yield events.end()
    turn.store(events.response, events.names)


def _stored(request: Request) -> Any:
    state = state_of(request)
    response_id = request.path_params["response_id"]
    stored = state.responses.get(response_id) if state.responses is not None else None
    if stored is None:
        raise NotFoundError(f"No response found with id '{response_id}'.", param="response_id")
    return stored


async def get_response(request: Request) -> Response:
    return json_response(orjson.dumps(_stored(request).response))


async def delete_response(request: Request) -> Response:
    stored = _stored(request)
    store = state_of(request).responses
    assert store is not None
    store.delete(stored.response["id"])
    body = {"id": stored.response["id"], "object": "response.deleted", "deleted": True}
    return json_response(orjson.dumps(body))


async def list_input_items(request: Request) -> Response:
    items = _stored(request).input_items
    if request.query_params.get("order", "desc") == "desc":
        items = items[::-1]
    body = {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": False,
    }
    return json_response(orjson.dumps(body))


def responses_routes(prefix: str) -> list[BaseRoute]:
    return [
        Route(f"{prefix}/responses", create_response, methods=["POST"]),
        Route(f"{prefix}/responses/{{response_id}}", get_response, methods=["GET"]),
        Route(f"{prefix}/responses/{{response_id}}", delete_response, methods=["DELETE"]),
        Route(f"{prefix}/responses/{{response_id}}/input_items", list_input_items, methods=["GET"]),
    ]
