"""HTTP routes: chat completions, models, health, and the web chat page with its assets."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from interference import __version__
from interference.api.errors import from_validation_error, invalid_json, stream_error
from interference.api.limits import check_limits
from interference.api.media import media_routes
from interference.api.messages import count_tokens, messages
from interference.api.record import record_of
from interference.api.responses import responses_routes
from interference.api.sse import DONE, EventStreamResponse, event
from interference.api.state import json_response, read_json_body, resolve_model, state_of
from interference.api.web_chat import chat_page, ui_asset, wants_html
from interference.errors import InterferenceError, ServerError
from interference.wire.anthropic_messages import ModelInfo, ModelInfoList
from interference.wire.chat import ChatCompletionRequest
from interference.wire.chunks import Batch, Reply
from interference.wire.completions import CompletionRequest
from interference.wire.embeddings import EmbeddingRequest
from interference.wire.models import ModelCard, ModelList

if TYPE_CHECKING:
    from interference.routing.router import StreamAnswer
    from interference.routing.table import Deployment

M = TypeVar("M", bound=BaseModel)


async def _parse(request: Request, model: type[M]) -> M:
    server = state_of(request).config.server
    body = await read_json_body(request, server.max_body_bytes)  # in time: the guard sees to it
    if b"NaN" in body or b"Infinity" in body:  # pydantic's parser takes them; JSON has none
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise invalid_json(str(exc)) from None
    try:
        parsed = model.model_validate_json(body)
    except ValidationError as exc:
        try:  # the request as data, to name the field at fault (a body pydantic could not
            data = orjson.loads(body)  # parse has no fields: json_invalid, which needs none)
        except orjson.JSONDecodeError:
            data = None
        raise from_validation_error(exc, data) from None
    if isinstance(parsed, ChatCompletionRequest | CompletionRequest | EmbeddingRequest):
        check_limits(parsed, server.limits, len(body))
    return parsed


async def _generate(
    request: Request,
    parsed: ChatCompletionRequest | CompletionRequest,
    *,
    id_prefix: str,
    call: Callable[[Deployment], Awaitable[Reply]],
    open_stream: Callable[[Deployment], AsyncGenerator[Batch, None]],
) -> Response:
    """Answer a chat or text completion request, streamed or not, through the router."""
    state = state_of(request)
    record = record_of(request.scope)
    record.model, record.stream = parsed.model, bool(parsed.stream)
    limit = parsed.token_limit if isinstance(parsed, ChatCompletionRequest) else parsed.max_tokens
    await resolve_model(request, parsed.model, limit)  # 404, 403 or 429 before any work
    cid = f"{id_prefix}-{os.urandom(16).hex()}"
    created = int(time.time())
    started = time.perf_counter()

    if not parsed.stream:
        answer = await state.router.call(parsed, call)
        result = answer.result
        result.stamp(cid, created, parsed.model)
        record.deployment, record.attempts = answer.deployment.name, answer.attempts
        usage = result.token_counts()
        if usage:
            record.prompt_tokens, record.completion_tokens = usage
        record.cached_tokens = answer.result.cached_tokens()
        return Response(
            result.to_json(),
            media_type="application/json",
            headers=_answer_headers(answer.deployment.name, answer.attempts),
        )

    # The router returns once the first output has arrived, so that a failure before it
    # (refused, timed out, context overflow) can fall back or be a real HTTP status.
    streamed: StreamAnswer = await state.router.stream(parsed, open_stream)
    record.stream_opened(streamed, started)
    chunks = streamed.chunks

    async def relay() -> AsyncGenerator[bytes, None]:
        record.outcome = "client_closed"  # unless the stream gets to its end
        include_usage = parsed.include_usage
        try:
            async for batch in chunks:  # the chunks that arrived together leave in one write
                events: list[bytes] = []
                for chunk in batch:
                    if record.count(chunk) and not include_usage:
                        chunk.drop_usage()
                    if include_usage or chunk.has_choices():
                        chunk.stamp(cid, created, parsed.model)
                        events.append(event(chunk.to_json()))
                if events:
                    yield b"".join(events)
            record.outcome = "ok"
        except InterferenceError as exc:
            record.outcome, record.error, record.error_message = "error", exc.code, exc.message
            yield stream_error(exc)
            return
        except Exception:
            record.outcome, record.error = "error", "internal_error"
            record.exception = sys.exc_info()[1]  # logged once, on the request's line
            yield stream_error(ServerError("The stream ended because of a server error."))
            return
        finally:
            await chunks.aclose()
        yield DONE

    return EventStreamResponse(
        relay(),
        headers=_answer_headers(streamed.deployment.name, streamed.attempts),
        release=chunks.aclose,
    )


async def chat_completions(request: Request) -> Response:
    chat = await _parse(request, ChatCompletionRequest)
    return await _generate(
        request,
        chat,
        id_prefix="chatcmpl",
        call=lambda d: d.provider.chat_reply(chat, d.model),
        open_stream=lambda d: d.provider.chat_batches(chat, d.model),
    )


async def completions(request: Request) -> Response:
    text = await _parse(request, CompletionRequest)
    return await _generate(
        request,
        text,
        id_prefix="cmpl",
        call=lambda d: d.provider.text_reply(text, d.model),
        open_stream=lambda d: d.provider.text_batches(text, d.model),
    )


async def embeddings(request: Request) -> Response:
    state = state_of(request)
    parsed = await _parse(request, EmbeddingRequest)
    record = record_of(request.scope)
    record.model = parsed.model
    await resolve_model(request, parsed.model, 0)  # embeddings: no answer tokens
    answer = await state.router.call(parsed, lambda d: d.provider.embed(parsed, d.model))
    result = answer.result
    result.model = parsed.model
    record.deployment, record.attempts = answer.deployment.name, answer.attempts
    record.prompt_tokens = result.usage.prompt_tokens
    return Response(
        result.to_json(),
        media_type="application/json",
        headers=_answer_headers(answer.deployment.name, answer.attempts),
    )


def _answer_headers(deployment: str, attempts: int) -> dict[str, str]:
    return {"x-interference-deployment": deployment, "x-interference-attempts": str(attempts)}


async def providers_status(request: Request) -> Response:
    """Operators' view: providers, deployments, health and cooldowns."""
    return json_response(orjson.dumps(state_of(request).router.describe()))


def _anthropic_info(card: ModelCard) -> ModelInfo:
    created = datetime.fromtimestamp(card.created, UTC).isoformat().replace("+00:00", "Z")
    return ModelInfo(id=card.id, display_name=card.id, created_at=created)


def _wants_anthropic(request: Request) -> bool:
    """Anthropic's SDK and Claude Code send ``anthropic-version`` with every request."""
    return "anthropic-version" in request.headers


async def list_models(request: Request) -> Response:
    cards = state_of(request).router.cards()
    if _wants_anthropic(request):
        infos = [_anthropic_info(card) for card in cards]
        listed = ModelInfoList(
            data=infos,
            first_id=infos[0].id if infos else None,
            last_id=infos[-1].id if infos else None,
        )
        return json_response(listed.model_dump_json().encode())
    return json_response(ModelList(data=cards).to_json())


async def get_model(request: Request) -> Response:
    name = request.path_params["model_id"]
    card = state_of(request).router.card(name)
    if _wants_anthropic(request):
        return json_response(_anthropic_info(card).model_dump_json().encode())
    return json_response(card.to_json())


async def health(request: Request) -> Response:
    """``ok``, ``loading`` (a model is not ready yet) or ``draining`` (shutting down: 503).

    Without a key on a server that has keys, only ``status`` and ``ready`` are shown."""
    state = state_of(request)
    providers = [p.describe() for p in state.providers]
    ready = all(p["ready"] for p in providers)
    draining = state.guard.draining
    status = "draining" if draining else "ok" if ready else "loading"
    body: dict[str, object] = {"status": status, "ready": ready and not draining}
    if record_of(request.scope).authorized:
        body |= {
            "version": __version__,
            "uptime_s": round(time.time() - state.started_at, 1),
            "providers": providers,
        }
        if state.accounting is not None:
            body["storage"] = state.accounting.describe()
    return json_response(orjson.dumps(body), 503 if draining else 200)


async def landing(request: Request) -> Response:
    """The web chat for browsers; for other clients what this is, in JSON.

    Without a key on a server that has keys, the JSON leaves out the models and aliases."""
    if wants_html(request):
        return chat_page(request)
    state = state_of(request)
    base = str(request.base_url).rstrip("/")
    body: dict[str, object] = {
        "name": "interference",
        "description": "A local, OpenAI-compatible LLM gateway.",
        "version": __version__,
        "base_url": f"{base}/v1",
    }
    if record_of(request.scope).authorized:
        body |= {
            "models": state.router.model_ids,
            "aliases": state.router.aliases,
            "alias_patterns": state.router.alias_patterns,
            # what the web chat offers besides chat: a microphone, a read-aloud button
            "chat_models": state.router.serving("chat"),
            "speech_models": state.router.serving("speech"),
            "transcription_models": state.router.serving("transcriptions"),
        }
    body["endpoints"] = [
        "POST /v1/chat/completions",
        "POST /v1/completions",
        "POST /v1/embeddings",
        "POST /v1/responses, GET and DELETE /v1/responses/{id}",
        "POST /v1/audio/speech, /v1/audio/transcriptions, /v1/audio/translations",
        "POST /v1/images/generations, /v1/images/edits",
        "POST /v1/moderations",
        "POST /v1/messages (Anthropic)",
        "POST /v1/messages/count_tokens (Anthropic)",
        "GET /v1/models",
        "GET /v1/providers",
        "POST /api/pull, GET /api/tags (Ollama's: models from Hugging Face, master key)",
        "GET /health",
        "GET / (the web chat, for browsers)",
    ]
    return json_response(orjson.dumps(body, option=orjson.OPT_INDENT_2))


def routes() -> list[BaseRoute]:
    out: list[BaseRoute] = [
        Route("/", landing, methods=["GET"]),
        Route("/ui/{name}", ui_asset, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/v1/health", health, methods=["GET"]),
        Route("/v1/providers", providers_status, methods=["GET"]),
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    ]
    for prefix in ("/v1", ""):  # the legacy 0.x client is often pointed at the bare host
        out += [
            Route(f"{prefix}/chat/completions", chat_completions, methods=["POST"]),
            Route(f"{prefix}/completions", completions, methods=["POST"]),
            Route(f"{prefix}/embeddings", embeddings, methods=["POST"]),
            Route(f"{prefix}/models", list_models, methods=["GET"]),
            Route(f"{prefix}/models/{{model_id:path}}", get_model, methods=["GET"]),
            *responses_routes(prefix),
            *media_routes(prefix),
        ]
    return out
