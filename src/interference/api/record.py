"""What is known of one request: the guard's bookkeeping and the fields of its log line.

The request guard (:mod:`interference.api.guard`) creates a :class:`RequestRecord` for every
request and puts it in the ASGI scope; routes and error handlers fill in what they learn
(model, deployment, tokens, the error answered), and the guard logs it when the request ends.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.types import Receive, Scope

from interference.upstream.client import PoolWait

if TYPE_CHECKING:
    from interference.routing.router import StreamAnswer
    from interference.store.keys import KeyRecord
    from interference.wire.chunks import StreamChunk

SCOPE_KEY = "interference.request"


@dataclass(slots=True, eq=False)
class RequestRecord:
    """One request as the guard and the routes see it; its fields make the log line."""

    id: str
    method: str
    path: str
    client: str  # the concurrency key: an API key's digest prefix, or the client's address
    started: float
    task: asyncio.Task[Any] | None
    authorized: bool = False
    status: int = 0
    response_started: bool = False
    sse: bool = False
    loop_started: float = 0.0  # the event loop's time when it began
    body_done: bool = False  # the request body has been read whole
    sending_since: float = 0.0  # loop time a body write began to wait; 0 when none waits
    cut_reason: str | None = None
    receive: Receive | None = None  # the server's own, for the guard's disconnect watch
    hang_up_watch: asyncio.Task[None] | None = None
    admin: bool = False  # presented the master key
    virtual_key: KeyRecord | None = None  # presented this virtual key
    public: bool = False  # a path open without a key (health, the web chat's files)
    limit_headers: bytes = b""  # x-ratelimit-* lines of the head (store.rate_limits.HeadLines)
    limit_counted: bool = False  # the key's limiter counts this request until it ends
    limit_shared: bool = False  # ... in Redis (else in this process)
    body_bytes: int = 0  # the request body's size, once read
    reserved: float = 0.0  # USD held against the key's budget until the request ends
    reserved_shared: bool = False  # ... in Redis (else in this process)
    pool_wait: PoolWait = field(default_factory=PoolWait)  # waits for an upstream connection
    # filled in by the routes
    model: str | None = None
    public_model: str | None = None  # the configured model the name resolved to (a label)
    cost: float = 0.0  # USD, as the usage ledger counted it
    charged: bool = False  # the cost is counted against the key (Accounting.charge)
    deployment: str | None = None
    attempts: int | None = None
    stream: bool | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None  # of the prompt tokens, read from the upstream's cache
    chunks: int = 0  # streamed chunks with choices (an estimate when a stream has no usage)
    ttft_ms: float | None = None
    outcome: str | None = None  # a stream's end: ok, client_closed, error, shutdown, ...
    error: str | None = None  # the code of the error answered
    error_message: str | None = None
    exception: BaseException | None = None  # an unexpected one, logged with its traceback

    def stream_opened(self, streamed: StreamAnswer, started: float) -> None:
        """A stream's first output arrived (``started``: ``time.perf_counter()`` at the start)."""
        self.ttft_ms = (time.perf_counter() - started) * 1000
        self.deployment, self.attempts = streamed.deployment.name, streamed.attempts

    def count(self, chunk: StreamChunk) -> bool:
        """Take a streamed chunk's usage, if it carries any (whether it carried completion
        tokens, the sign of a usage chunk)."""
        if chunk.has_choices():
            self.chunks += 1
        prompt = chunk.prompt_tokens()
        if prompt is not None:  # the cached part comes with the prompt's count
            self.prompt_tokens = prompt
            cached = chunk.cached_tokens()
            if cached is not None:
                self.cached_tokens = cached
        completion = chunk.completion_tokens()
        if completion is None:
            return False
        self.completion_tokens = completion
        return True

    def fields(self, elapsed_ms: float) -> dict[str, Any]:
        return {
            "request_id": self.id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "model": self.model,
            "deployment": self.deployment,
            "attempts": self.attempts,
            "stream": self.stream,
            "outcome": self.outcome,
            "error": self.error,
            "error_message": self.error_message,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 1),
            "pool_wait_ms": round(self.pool_wait.seconds * 1000, 1) or None,
            "ms": round(elapsed_ms, 1),
            "client": self.client,
        }


def record_of(scope: Scope) -> RequestRecord:
    """The guard's record of the request of ``scope`` (a detached one outside the guard)."""
    record: RequestRecord | None = scope.get(SCOPE_KEY)
    if record is None:
        record = RequestRecord("-", scope.get("method", ""), scope["path"], "-", 0.0, None)
        scope[SCOPE_KEY] = record
    return record
