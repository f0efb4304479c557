"""The one place where failures become error responses, in the dialect of the route.

Every :class:`~interference.errors.InterferenceError` becomes its status and, on the OpenAI
routes, ``{"error": {"message", "type", "param", "code"}}``; on Ollama's (``/api/*``)
``{"error": "message"}``; on Anthropic's (``/v1/messages``)
``{"type": "error", "error": {"type", "message"}}`` with Anthropic's error types, and a context
overflow says ``prompt is too long: N tokens > M maximum`` (the words Claude Code compacts on).
Starlette's own 404/405 and anything unexpected become the same shapes (an unexpected failure
is logged with its traceback, and the client gets a 500 body without one).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from interference.api.record import record_of
from interference.api.sse import DONE, event
from interference.errors import (
    ContextLengthExceededError,
    InterferenceError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    ServerError,
)

logger = logging.getLogger(__name__)

# Names pydantic puts in an error location that are not fields: the member types of a union
# (``str``, ``list[str]``, ``function-after[...]``, ``tagged-union[...]``). The tags of tagged
# unions are told apart from fields by the request itself (:func:`_param`).
_UNION_MEMBERS = {"str", "int", "float", "bool", "dict", "list", "none"}


Dialect = Literal["openai", "anthropic", "ollama"]

#: Anthropic's error types by status (https://docs.claude.com/en/api/errors); other 4xx are
#: ``invalid_request_error``, other 5xx ``api_error``
_ANTHROPIC_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
_OVERFLOW = re.compile(r"\((\d+) tokens\).*?\((\d+) tokens\)")


def dialect_of(path: str) -> Dialect:
    """The API dialect a route speaks, by its path."""
    if path.startswith("/api/"):
        return "ollama"
    return "anthropic" if path.startswith("/v1/messages") else "openai"


def _anthropic_error(exc: InterferenceError) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(exc.status)
    if kind is None:
        kind = "invalid_request_error" if exc.status < 500 else "api_error"
    message = exc.message
    if isinstance(exc, ContextLengthExceededError):
        found = _OVERFLOW.search(message)
        head = f"{found.group(1)} tokens > {found.group(2)} maximum" if found else message
        message = f"prompt is too long: {head}"
    return {"type": "error", "error": {"type": kind, "message": message}}


def error_body(exc: InterferenceError, dialect: Dialect = "openai") -> bytes:
    if dialect == "anthropic":
        return orjson.dumps(_anthropic_error(exc))
    if dialect == "ollama":
        return orjson.dumps({"error": exc.message})
    return orjson.dumps({"error": exc.to_dict()})


def error_response(exc: InterferenceError, dialect: Dialect = "openai") -> Response:
    return Response(
        error_body(exc, dialect),
        status_code=exc.status,
        media_type="application/json",
        headers=exc.headers,
    )


def stream_error(exc: InterferenceError, dialect: Dialect = "openai") -> bytes:
    """An error as the last of a stream's events: OpenAI's ``data:`` event then ``[DONE]``,
    Anthropic's ``error`` event, Ollama's ``{"error": ...}`` line."""
    if dialect == "anthropic":
        return b"event: error\ndata: " + error_body(exc, dialect) + b"\n\n"
    if dialect == "ollama":
        return error_body(exc, dialect) + b"\n"
    return event(error_body(exc)) + DONE


def _param(loc: tuple[Any, ...], data: Any, missing: bool) -> str | None:
    """The dotted ``param`` of a pydantic error location in the request ``data``.

    A tagged union puts its tag in the location: ``tools, 0, "function", "function", "name"``
    is ``tools[0].function.name``, ``messages, 0, "user", "content"`` is
    ``messages[0].content``. Walking ``data`` beside the location tells the tag (one per
    object) from a field: before the end it is no key of the object there, or the field after
    it has its name; at the end it is the object's ``type`` or ``role`` value rather than one of
    its keys, unless the error is a ``missing`` field (``{"type": "text"}`` without its
    ``text``)."""
    out = ""
    node = data
    tag_seen = False
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            tag_seen = False
            continue
        if i > 0 and (part in _UNION_MEMBERS or "[" in part or "-" in part):
            continue
        if isinstance(node, dict) and not tag_seen:
            if i < len(loc) - 1:
                tag = part not in node or loc[i + 1] == part
            else:
                tag = (
                    not missing
                    and part not in node
                    and part in (node.get("type"), node.get("role"))
                )
            if tag:
                tag_seen = True
                continue
        out += f".{part}" if out else part
        node = node.get(part) if isinstance(node, dict) else None
        tag_seen = False
    return out or None


def invalid_json(detail: str) -> InvalidRequestError:
    """The 400 for a body that is not JSON; ``detail`` says where the parser stopped."""
    return InvalidRequestError(
        f"We could not parse the JSON body of your request ({detail}). "
        "The OpenAI API expects a JSON payload."
    )


def from_validation_error(error: ValidationError, data: Any) -> InvalidRequestError:
    """The first problem of request body ``data`` (parsed JSON) as a 400 naming its ``param``."""
    items = error.errors(include_url=False)
    # A union reports one error per member; the deepest one is the most specific.
    first = max(items, key=lambda item: len(item["loc"]))
    kind = first["type"]
    if kind == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        if "EOF while parsing a value at line 1 column 0" in detail:
            return InvalidRequestError("The request body is empty; expected a JSON object.")
        return invalid_json(detail)
    loc = tuple(first["loc"])
    if not loc:
        return InvalidRequestError("The request body must be a JSON object.")
    param = _param(loc, data, missing=kind == "missing")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        field = str(first.get("ctx", {}).get("discriminator", "")).strip("'")
        param = f"{param}.{field}" if param and field else param
        expected = first.get("ctx", {}).get("expected_tags", "")
        tag = first.get("ctx", {}).get("tag")
        message = (
            f"Invalid value for '{param}': {tag!r} is not one of {expected}."
            if kind == "union_tag_invalid"
            else f"Missing required parameter: '{param}'."
        )
        return InvalidRequestError(message, param=param)
    if kind == "missing":
        return InvalidRequestError(f"Missing required parameter: '{param}'.", param=param)
    if kind == "extra_forbidden":
        return InvalidRequestError(f"Unrecognized request argument: '{param}'.", param=param)
    message = first["msg"].removeprefix("Value error, ")
    return InvalidRequestError(f"Invalid value for '{param}': {message}.", param=param)


async def _on_interference_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InterferenceError)
    record = record_of(request.scope)
    record.error, record.error_message = exc.code, exc.message
    return error_response(exc, dialect_of(request.url.path))


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        mapped: InterferenceError = NotFoundError(
            f"Unknown route: {request.method} {request.url.path}. "
            "The API is under /v1 (e.g. POST /v1/chat/completions, GET /v1/models)."
        )
    elif exc.status_code == 405:
        mapped = MethodNotAllowedError(
            f"Method {request.method} is not allowed for {request.url.path}.",
            headers=dict(exc.headers or {}),
        )
    else:
        mapped = InvalidRequestError(str(exc.detail), code=str(exc.status_code))
        mapped.status = exc.status_code
    return await _on_interference_error(request, mapped)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    error = ServerError("The server had an error while processing your request.")
    return error_response(error, dialect_of(request.url.path))


EXCEPTION_HANDLERS = {
    InterferenceError: _on_interference_error,
    HTTPException: _on_http_exception,
    Exception: _on_unexpected,
}
