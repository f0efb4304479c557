"""What every route shares: the application's state and the reading of a JSON body."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from interference.api.errors import from_validation_error, invalid_json
from interference.api.record import record_of
from interference.errors import (
    PermissionDeniedError,
    RequestTooLargeError,
    UnsupportedMediaTypeError,
)

if TYPE_CHECKING:
    from interference.api.accounting import Accounting
    from interference.api.guard import RequestGuard
    from interference.api.response_store import ResponseStore
    from interference.api.telemetry import Telemetry
    from interference.config import Config
    from interference.providers.base import Provider
    from interference.routing.router import Router
    from interference.routing.table import PublicModel
    from interference.store.keys import KeyStore

M = TypeVar("M", bound=BaseModel)
_JSON_TYPES = ("application/json", "text/plain", "application/x-www-form-urlencoded")


@dataclass
class AppState:
    """Everything the routes need, created by ``create_app`` (no module globals)."""

    config: Config
    router: Router
    providers: list[Provider]
    guard: RequestGuard
    responses: ResponseStore | None = None  # None: responses are not stored
    keys: KeyStore | None = None  # virtual keys (None: the server has no master key)
    accounting: Accounting | None = None  # keys and usage in the database (same condition)
    telemetry: Telemetry | None = None  # /metrics and the recent aggregates
    started_at: float = field(default_factory=time.time)


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.interference
    return state


async def resolve_model(
    request: Request, name: str, output_tokens: int | None = None, *, reserve: bool = True
) -> PublicModel:
    """The model a request names (404 when none), if the request's virtual key may use it
    (403 ``model_not_allowed`` when its list names neither ``name`` nor the model) and its
    budget holds the request's worst-case cost (``output_tokens``: the answer's bound, when
    the request sets one; 429 ``budget_exceeded`` otherwise)."""
    state = state_of(request)
    model = state.router.resolve(name)
    record = record_of(request.scope)
    record.public_model = model.name
    key = record.virtual_key
    if key is not None and key.models and not (key.allows(name) or key.allows(model.name)):
        raise PermissionDeniedError(
            f"This API key may not use the model `{name}`.",
            param="model",
            code="model_not_allowed",
        )
    if reserve and key is not None and key.max_budget is not None:
        accounting = state.accounting  # released when the guard sees the request end
        assert accounting is not None, "virtual keys come with the accounting"
        if not accounting.reserve_here(record, key, model, output_tokens):
            await accounting.reserve(record, model, output_tokens)  # in Redis
    return model


def json_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")


async def read_model(request: Request, model: type[M]) -> tuple[M, bytes]:
    """The body read into ``model`` (a 400 naming the first field at fault), and the body."""
    body = await read_json_body(request, state_of(request).config.server.max_body_bytes)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid_json(str(exc)) from None
    try:
        return model.model_validate(data), body
    except ValidationError as exc:
        raise from_validation_error(exc, data) from None


async def read_json_body(request: Request, limit: int) -> bytes:
    """The request body, refused early when it is too large or not JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type not in _JSON_TYPES and not content_type.endswith("+json"):
        raise UnsupportedMediaTypeError(
            f"Unsupported Content-Type `{content_type}`: send a JSON body "
            "with `Content-Type: application/json`."
        )
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(f"The request body exceeds the limit of {limit} bytes.")
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise RequestTooLargeError(f"The request body exceeds the limit of {limit} bytes.")
        parts.append(part)
    record_of(request.scope).body_bytes = size  # a bound on the prompt's tokens (budgets)
    return b"".join(parts)
