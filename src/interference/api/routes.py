"""HTTP routes: chat completions, models, health and the landing page."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from interference import __version__
from interference.api.errors import error_body, from_validation_error
from interference.api.landing import landing_html
from interference.api.sse import DONE, EventStreamResponse, event
from interference.api.wire import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ModelList,
)
from interference.api.wire_more import Completion, CompletionRequest, EmbeddingRequest
from interference.errors import (
    InterferenceError,
    RequestTooLargeError,
    ServerError,
    UnsupportedMediaTypeError,
)

if TYPE_CHECKING:
    from interference.config import Config
    from interference.providers.base import Provider
    from interference.router import Deployment, Router, StreamAnswer

logger = logging.getLogger("interference.requests")
M = TypeVar("M", bound=BaseModel)

_JSON_TYPES = ("application/json", "text/plain", "application/x-www-form-urlencoded")


@dataclass
class AppState:
    """Everything the routes need, created by ``create_app`` (no module globals)."""

    config: Config
    router: Router
    providers: list[Provider]
    started_at: float = field(default_factory=time.time)


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.interference
    return state


def json_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")


async def read_json_body(request: Request, limit: int) -> bytes:
    """The request body, refused early when it is too large or not JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type not in _JSON_TYPES and not content_type.endswith("+json"):
        raise UnsupportedMediaTypeError(
            f"Unsupported Content-Type `{content_type}`: send a JSON body "
            "with `Content-Type: application/json`."
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(f"The request body exceeds the limit of {limit} bytes.")
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise RequestTooLargeError(f"The request body exceeds the limit of {limit} bytes.")
        parts.append(part)
    return b"".join(parts)


def _unset(model: BaseModel, *names: str) -> None:
    """Leave fields off the wire (``exclude_unset``) that an upstream had set."""
    for name in names:
        model.model_fields_set.discard(name)


def _stamp(
    obj: ChatCompletion | ChatCompletionChunk | Completion, cid: str, created: int, model: str
) -> None:
    """Give an upstream object our id, timestamp and the model name the client asked for."""
    obj.id = cid
    obj.created = created
    obj.model = model
    _unset(obj, "system_fingerprint")


async def _parse(request: Request, model: type[M]) -> M:
    body = await read_json_body(request, _state(request).config.server.max_body_bytes)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


async def _generate(
    request: Request,
    parsed: ChatCompletionRequest | CompletionRequest,
    *,
    kind: str,
    id_prefix: str,
    call: Callable[[Deployment], Awaitable[Any]],
    open_stream: Callable[[Deployment], AsyncGenerator[Any, None]],
) -> Response:
    """Answer a chat or text completion request, streamed or not, through the router."""
    state = _state(request)
    model = state.router.resolve(parsed.model)  # 404 before any work
    cid = f"{id_prefix}-{uuid.uuid4().hex}"
    created = int(time.time())
    started = time.perf_counter()

    if not parsed.stream:
        answer = await state.router.call(parsed, call)
        result = answer.result
        _stamp(result, cid, created, parsed.model)
        usage = result.usage
        logger.info(
            "%s model=%s deployment=%s attempts=%d stream=false status=200 prompt_tokens=%s "
            "completion_tokens=%s ms=%.0f",
            kind,
            model.name,
            answer.deployment.name,
            answer.attempts,
            usage.prompt_tokens if usage else "-",
            usage.completion_tokens if usage else "-",
            (time.perf_counter() - started) * 1000,
        )
        return Response(
            result.to_json(),
            media_type="application/json",
            headers=_answer_headers(answer.deployment.name, answer.attempts),
        )

    # The router returns once the first output has arrived, so that a failure before it
    # (refused, timed out, context overflow) can fall back or be a real HTTP status.
    streamed: StreamAnswer[Any] = await state.router.stream(parsed, open_stream)
    ttft = (time.perf_counter() - started) * 1000
    deployment = streamed.deployment.name
    chunks = streamed.chunks

    async def relay() -> AsyncGenerator[bytes, None]:
        status = "client_closed"  # unless the stream gets to its end
        completion_tokens: int | str = "-"
        try:
            async for chunk in chunks:
                if chunk.usage is not None:
                    completion_tokens = chunk.usage.completion_tokens
                    if not parsed.include_usage:
                        _unset(chunk, "usage")
                if chunk.choices or parsed.include_usage:
                    _stamp(chunk, cid, created, parsed.model)
                    yield event(chunk.to_json())
            status = "ok"
        except InterferenceError as exc:
            status = f"error:{exc.code}"
            logger.warning("stream from %s failed after start: %s", deployment, exc.message)
            yield event(error_body(exc))
        except Exception:
            status = "error:internal"
            logger.exception("stream from %s failed after start", deployment)
            yield event(error_body(ServerError("The stream ended because of a server error.")))
        finally:
            await chunks.aclose()
            logger.info(
                "%s model=%s deployment=%s attempts=%d stream=true status=%s "
                "completion_tokens=%s ttft_ms=%.0f ms=%.0f",
                kind,
                model.name,
                deployment,
                streamed.attempts,
                status,
                completion_tokens,
                ttft,
                (time.perf_counter() - started) * 1000,
            )
        yield DONE

    return EventStreamResponse(relay(), headers=_answer_headers(deployment, streamed.attempts))


async def chat_completions(request: Request) -> Response:
    chat = await _parse(request, ChatCompletionRequest)
    return await _generate(
        request,
        chat,
        kind="chat",
        id_prefix="chatcmpl",
        call=lambda d: d.provider.chat(chat, d.model),
        open_stream=lambda d: d.provider.stream_chat(chat, d.model),
    )


async def completions(request: Request) -> Response:
    text = await _parse(request, CompletionRequest)
    return await _generate(
        request,
        text,
        kind="completion",
        id_prefix="cmpl",
        call=lambda d: d.provider.complete_text(text, d.model),
        open_stream=lambda d: d.provider.stream_text(text, d.model),
    )


async def embeddings(request: Request) -> Response:
    state = _state(request)
    parsed = await _parse(request, EmbeddingRequest)
    model = state.router.resolve(parsed.model)
    started = time.perf_counter()
    answer = await state.router.call(parsed, lambda d: d.provider.embed(parsed, d.model))
    result = answer.result
    result.model = parsed.model
    logger.info(
        "embeddings model=%s deployment=%s attempts=%d status=200 prompt_tokens=%d ms=%.0f",
        model.name,
        answer.deployment.name,
        answer.attempts,
        result.usage.prompt_tokens,
        (time.perf_counter() - started) * 1000,
    )
    return Response(
        result.to_json(),
        media_type="application/json",
        headers=_answer_headers(answer.deployment.name, answer.attempts),
    )


def _answer_headers(deployment: str, attempts: int) -> dict[str, str]:
    return {"x-interference-deployment": deployment, "x-interference-attempts": str(attempts)}


async def providers_status(request: Request) -> Response:
    """Operators' view: providers, deployments, health and cooldowns."""
    return json_response(orjson.dumps(_state(request).router.describe()))


async def list_models(request: Request) -> Response:
    return json_response(ModelList(data=_state(request).router.cards()).to_json())


async def get_model(request: Request) -> Response:
    name = request.path_params["model_id"]
    return json_response(_state(request).router.card(name).to_json())


async def health(request: Request) -> Response:
    state = _state(request)
    providers = [p.describe() for p in state.providers]
    ready = all(p["ready"] for p in providers)
    body = {
        "status": "ok" if ready else "loading",
        "ready": ready,
        "version": __version__,
        "uptime_s": round(time.time() - state.started_at, 1),
        "providers": providers,
    }
    return json_response(orjson.dumps(body))


async def landing(request: Request) -> Response:
    state = _state(request)
    base = str(request.base_url).rstrip("/")
    if "text/html" in request.headers.get("accept", ""):
        return HTMLResponse(landing_html(base, state.router.model_ids, state.router.aliases))
    body = {
        "name": "interference",
        "description": "A local, OpenAI-compatible LLM gateway.",
        "version": __version__,
        "base_url": f"{base}/v1",
        "models": state.router.model_ids,
        "aliases": state.router.aliases,
        "endpoints": [
            "POST /v1/chat/completions",
            "POST /v1/completions",
            "POST /v1/embeddings",
            "GET /v1/models",
            "GET /v1/providers",
            "GET /health",
        ],
    }
    return json_response(orjson.dumps(body, option=orjson.OPT_INDENT_2))


def routes() -> list[BaseRoute]:
    out: list[BaseRoute] = [
        Route("/", landing, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/v1/health", health, methods=["GET"]),
        Route("/v1/providers", providers_status, methods=["GET"]),
    ]
    for prefix in ("/v1", ""):  # the legacy 0.x client is often pointed at the bare host
        out += [
            Route(f"{prefix}/chat/completions", chat_completions, methods=["POST"]),
            Route(f"{prefix}/completions", completions, methods=["POST"]),
            Route(f"{prefix}/embeddings", embeddings, methods=["POST"]),
            Route(f"{prefix}/models", list_models, methods=["GET"]),
            Route(f"{prefix}/models/{{model_id:path}}", get_model, methods=["GET"]),
        ]
    return out
