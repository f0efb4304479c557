"""What can go wrong when pulling a model from a hub, as errors a client and a terminal can read.

Each is an :class:`~interference.errors.InterferenceError`, so ``POST /api/pull`` answers it with
its status (in Ollama's ``{"error": ...}`` shape) and ``interference pull`` prints its message::

    HubError (502)                  the hub answered something unusable
    ├── HubUnreachableError (502)   no connection, a timeout, retries exhausted; nothing cached
    ├── DigestMismatchError (502)   the bytes' SHA-256 is not the hub's: the file was deleted
    HubNameError (400)              not hf:USER/REPO[:QUANT]
    HubAuthError (403)              the hub wants a token (gated, private) or refused HF_TOKEN
    HubNotFoundError (404)          no such repository, no GGUF that matches, not in the cache
"""

from __future__ import annotations

from interference.errors import (
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    UpstreamError,
)


class HubError(UpstreamError):
    """The hub's answer cannot be used."""

    default_code = "hub_error"


class HubUnreachableError(HubError):
    """The hub could not be reached, and no copy of the model is in the cache."""

    default_code = "hub_unreachable"


class DigestMismatchError(HubError):
    """The downloaded bytes are not the file the hub describes (its SHA-256 differs)."""

    default_code = "digest_mismatch"


class HubNameError(InvalidRequestError):
    """A model name that is not ``hf:USER/REPO[:QUANT]``."""

    default_code = "invalid_model_name"


class HubAuthError(PermissionDeniedError):
    """The repository is gated or private (or does not exist: the hub does not say which to a
    client without a token), or the hub refused the token."""

    default_code = "hub_auth_required"


class HubNotFoundError(NotFoundError):
    """No such repository or revision, no GGUF file that matches, or not in the cache."""

    default_code = "model_not_found"


class PullCancelledError(Exception):
    """The pull was stopped by its caller (a client that went away); the partial file stays,
    and the next pull resumes it."""
