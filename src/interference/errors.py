"""The one exception hierarchy of interference.

Every failure a client can see is an :class:`InterferenceError`. Each subclass fixes the
HTTP status and the OpenAI error ``type``; :mod:`interference.api.errors` turns any of them
into OpenAI's ``{"error": {"message", "type", "param", "code"}}`` body, in one place.
"""

from __future__ import annotations

from typing import Any, ClassVar


class InterferenceError(Exception):
    """Base of every error that becomes an OpenAI-style error response."""

    status: int = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None
    #: whether another attempt (a retry, another deployment) may succeed where this one failed
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}
        #: seconds the failing side asked us to wait (an upstream's ``Retry-After``)
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI error object (the value of the ``error`` key)."""
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}


# --- errors caused by the request itself (4xx) -------------------------------------------


class InvalidRequestError(InterferenceError):
    """The request is malformed or has a wrong value; ``param`` names the field."""

    status = 400
    type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    default_code = "context_length_exceeded"


class AuthenticationError(InterferenceError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(InterferenceError):
    """The key is valid but may not do this (a model outside its list, an admin route)."""

    status = 403
    type = "permission_error"
    default_code = "permission_denied"


class NotFoundError(InterferenceError):
    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    default_code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
        )


class MethodNotAllowedError(InterferenceError):
    status = 405
    type = "invalid_request_error"
    default_code = "method_not_allowed"


class RequestTimeoutError(InterferenceError):
    status = 408
    type = "invalid_request_error"
    default_code = "request_timeout"


class RequestTooLargeError(InterferenceError):
    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class UnsupportedMediaTypeError(InterferenceError):
    status = 415
    type = "invalid_request_error"
    default_code = "unsupported_media_type"


class RateLimitError(InterferenceError):
    status = 429
    type = "rate_limit_exceeded"
    default_code = "rate_limit_exceeded"
    retryable = True


class BudgetExceededError(RateLimitError):
    """A virtual key's budget cannot hold the request (OpenAI's type for a spent quota)."""

    type = "insufficient_quota"
    default_code = "budget_exceeded"
    retryable = False


# --- errors of the serving side (5xx) -----------------------------------------------------


class ServerError(InterferenceError):
    """An unexpected failure inside interference; the message never carries a traceback."""

    status = 500
    type = "server_error"
    default_code = "internal_error"


class ModelNotReadyError(InterferenceError):
    status = 503
    type = "server_error"
    default_code = "model_not_ready"
    retryable = True


class StorageUnavailableError(InterferenceError):
    """What counts a virtual key's budget (Redis, the database) cannot be reached, and
    ``storage.budgets_when_down`` is ``closed``."""

    status = 503
    type = "server_error"
    default_code = "budget_unavailable"


class ContextFullError(InterferenceError):
    """The local model's context, which its slots share, filled up with requests running at
    once; the engine ended those requests. Retryable: alone, the request fits."""

    status = 503
    type = "server_error"
    default_code = "context_full"
    retryable = True


class UpstreamError(InterferenceError):
    """A provider (the engine or a remote API) failed to produce an answer."""

    status = 502
    type = "server_error"
    default_code = "upstream_error"
    retryable = True


class UpstreamOverloadedError(UpstreamError):
    """The upstream said it is overloaded (Anthropic's ``overloaded_error``)."""

    status = 503
    default_code = "upstream_overloaded"


class UpstreamTimeoutError(UpstreamError):
    status = 504
    default_code = "upstream_timeout"


class UpstreamBusyError(UpstreamError):
    """Every connection to the upstream stayed in use for the provider's ``pool_timeout``: the
    request was not sent. Another deployment may take it; the same one is not retried (its
    pool is as full a moment later)."""

    status = 503
    default_code = "upstream_busy"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"retry-after": "1"})


#: the closed vocabulary of failure classes the metrics label attempts with
ERROR_CLASSES = (
    "timeout", "rate_limited", "overloaded", "busy", "context_full", "not_ready",
    "upstream_error", "invalid_request", "other",
)  # fmt: skip


def error_class(error: BaseException) -> str:
    """The class of a failure, in :data:`ERROR_CLASSES` (never an unbounded label)."""
    if isinstance(error, UpstreamTimeoutError):
        return "timeout"
    if isinstance(error, RateLimitError):
        return "rate_limited"
    if isinstance(error, UpstreamOverloadedError):
        return "overloaded"
    if isinstance(error, UpstreamBusyError):
        return "busy"
    if isinstance(error, ContextFullError):
        return "context_full"
    if isinstance(error, ModelNotReadyError):
        return "not_ready"
    if isinstance(error, UpstreamError):
        return "upstream_error"
    if isinstance(error, InvalidRequestError):
        return "invalid_request"
    return "other"
