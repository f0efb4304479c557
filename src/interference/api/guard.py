"""The request guard: the ASGI middleware every HTTP request passes first.

For each request it
- gives it an id (the client's ``x-request-id`` when it is a sane one), returned in the
  ``x-request-id`` response header and put on every log line written while serving it;
- checks the API key when the server has keys (``Authorization: Bearer KEY`` or
  ``x-api-key: KEY``): keys are kept as SHA-256 digests and compared in constant time;
- bounds the requests in flight per API key, and per client address for clients from other
  machines when the server has no keys; programs on this machine (loopback, keys off) have no
  such bound: they are the user's own, and a batch job opening 1,000 streams must not meet a
  limit it never set (issue 18). A refusal is written to the log once a minute, naming the
  setting (:class:`~interference.logs.LimitWarnings`);
- refuses new work while the server drains for a shutdown;
- turns any exception that escaped the routes into an OpenAI error (500 JSON, or an error event
  when a stream had started), logged once with its traceback; nothing reaches the ASGI server;
- writes one log line when the request ends: id, route, status, model, deployment, attempts,
  tokens, time to first token and latency (the routes fill in what they know on the
  :class:`RequestRecord` found in ``scope``).

It also ends requests from outside their task: :meth:`RequestGuard.cut_all` at the end of a
shutdown's grace period (a stream gets an error event and ``[DONE]``, a request with no answer
yet a 503), and the watchdog (:mod:`interference.api.watchdog`) for slow clients, late bodies
and clients gone before their answer began. The keys are :mod:`interference.api.keys`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from interference.api.errors import dialect_of, error_response, stream_error
from interference.api.keys import KeyRing, presented_key
from interference.api.record import SCOPE_KEY, RequestRecord
from interference.api.watchdog import Watchdog
from interference.config import LimitsConfig
from interference.errors import (
    AuthenticationError,
    InterferenceError,
    ModelNotReadyError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
)
from interference.logs import REQUEST_ID, RESPONSE_CUT, LimitWarnings
from interference.store.counters import KeyCounters
from interference.store.keys import KeyRecord, KeyStore
from interference.store.rate_limits import header_pairs, limited
from interference.upstream.client import POOL_WAIT

if TYPE_CHECKING:
    from interference.telemetry.tracing import Tracer

logger = logging.getLogger("interference.requests")

#: routes answered without a key: health (a reduced body: status only), and the web chat's
#: page (JSON clients get a reduced body) and assets (``/ui/...``; the page asks for the key)
PUBLIC_PATHS = frozenset({"/health", "/v1/health", "/"})
PUBLIC_PREFIX = "/ui/"
_SANE_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
_FAILED = frozenset({"error", "shutdown", "slow_client"})  # outcomes logged as warnings


def is_local(address: str) -> bool:
    """Whether a client address is this machine's (loopback, or a Unix socket: ``-``)."""
    return address.startswith(("127.", "::1", "::ffff:127.")) or address in ("-", "localhost")


#: ended requests are counted (usage rows, metrics) in batches: every this many, or this many
#: seconds after the first of a batch ended (a read of the figures counts the batch first)
COUNT_EVERY_REQUESTS = 256
COUNT_EVERY_S = 0.05

#: an entry of the scope that an HTTP/1.1 server may offer (``interference serve``'s does:
#: ``interference.server.http_protocol``): ``scope[HEAD_LINES](scope, lines)`` adds ``lines``
#: (``name: value\r\n`` each, made by this server, so nothing to check) to the head of the
#: scope's response, before its ``http.response.start``; False when it cannot, and then they
#: are sent as headers of that message. uvicorn checks each header of the message with two
#: regular expressions and copies it: 2.3 µs for the six ``x-ratelimit-*`` headers of a
#: request with a limited key (timeit), against 0.4 µs for one formatting of their lines.
HEAD_LINES = "interference.head_lines"


class RequestGuard:
    """ASGI middleware; see the module docstring. One per app (``create_app`` makes it)."""

    def __init__(
        self,
        keys: list[str],
        limits: LimitsConfig,
        master_key: str | None = None,
        virtual_keys: KeyStore | None = None,
    ) -> None:
        self.app: ASGIApp | None = None
        self.limits = limits
        self.keys = KeyRing(keys)
        self.master = KeyRing([master_key] if master_key else [])
        self.keyed = bool(self.keys or self.master)  # requests need a key
        self.virtual_keys = virtual_keys
        #: the virtual keys' limits (set with them, by create_app)
        self.counters: KeyCounters | None = None
        #: told of every request that named a model, after it ended, in batches (the usage
        #: ledger: count_ended)
        self.on_finished: Callable[[RequestRecord, float], None] | None = None
        #: told at once of a request that ended holding a budget reservation in Redis (its real
        #: cost: the other replicas cannot count this process's batch)
        self.charge: Callable[[RequestRecord], object] | None = None
        #: told of every request, after it ended, in batches (the metrics: count_ended)
        self.telemetry: Callable[[RequestRecord, float], None] | None = None
        #: starts a span per request (telemetry.otlp_endpoint; None: no tracing)
        self.tracer: Tracer | None = None
        self.draining = False
        self.active: set[RequestRecord] = set()
        self.in_flight: Counter[str] = Counter()
        self.limit_warnings = LimitWarnings(logger)
        self._ended: list[tuple[RequestRecord, float]] = []  # for count_ended
        self._watchdog = Watchdog(self.active, limits, self.cut)

    def wrap(self, app: ASGIApp) -> RequestGuard:
        """Guard ``app`` (the factory Starlette's ``Middleware`` calls)."""
        self.app = app
        return self

    # --- lifecycle

    def start(self) -> None:
        """Start the watchdog (in the app's lifespan, inside its event loop)."""
        self._watchdog.start()

    async def stop(self) -> None:
        await self._watchdog.stop()

    def begin_drain(self) -> None:
        """From now on new requests are refused (503) and health says ``draining``."""
        self.draining = True

    def cut_all(self, reason: str = "shutdown") -> int:
        """End every request in flight now; returns how many were cut."""
        count = 0
        for record in list(self.active):
            if self.cut(record, reason):
                count += 1
        return count

    def cut(self, record: RequestRecord, reason: str) -> bool:
        if record.cut_reason is not None or record.task is None or record.task.done():
            return False
        record.cut_reason = reason
        record.task.cancel()
        return True

    def count_ended(self) -> None:
        """Tell :attr:`on_finished` and :attr:`telemetry` of the requests that ended since
        the last call.

        Ended requests are counted in batches, every :data:`COUNT_EVERY_REQUESTS` or
        :data:`COUNT_EVERY_S` after the first of a batch ended, and whenever the figures are
        read (``Telemetry.snapshot``, ``Accounting.sync`` and ``Accounting.reported_spend``).
        Counted one by one, between requests, the same additions cost several times the CPU
        they cost in a batch (the caches hold the request's code and data, not the
        counters'): in ``bench/hot_path.py`` metrics on added 4.7 µs to a 93 µs request, 2.3
        µs in batches. A request that holds a budget reservation of this process keeps it
        until its batch is counted: a reservation is never less than the cost that replaces
        it, so a budget holds meanwhile, and a request the budget would refuse counts the
        batch first (``Accounting.reserve_here``). One that holds it in Redis is charged at
        once (:attr:`charge`). A crash can lose the batch: :data:`COUNT_EVERY_S` more than
        ``storage.refresh_s``."""
        ended, self._ended = self._ended, []
        on_finished, telemetry = self.on_finished, self.telemetry
        for record, elapsed_ms in ended:
            try:
                if on_finished is not None and record.model is not None:
                    on_finished(record, elapsed_ms)  # first: it sets the cost the metrics add
                if telemetry is not None:
                    telemetry(record, elapsed_ms)
            except Exception:
                logger.exception("counting request %s failed", record.id)

    # --- requests

    def _new_record(self, scope: Scope) -> RequestRecord:
        given = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        request_id = given if _SANE_ID.fullmatch(given) else f"req_{os.urandom(12).hex()}"
        client = scope.get("client")
        return RequestRecord(
            id=request_id,
            method=scope["method"],
            path=scope["path"],
            client=client[0] if client else "-",
            started=time.perf_counter(),
            task=asyncio.current_task(),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "wrap() an app first"
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = self._new_record(scope)
        scope[SCOPE_KEY] = record
        token = REQUEST_ID.set(record.id)
        POOL_WAIT.set(record.pool_wait)  # the upstream clients add their waits for a connection
        span = None if self.tracer is None else self.tracer.request(scope, record.id)
        id_header = (b"x-request-id", record.id.encode())
        loop = asyncio.get_running_loop()
        record.loop_started = loop.time()
        record.receive = receive
        record.body_done = scope["method"] in _BODILESS  # their routes never read one

        async def guarded_receive() -> Message:
            message = await receive()
            if not message.get("more_body"):
                record.body_done = True
            return message

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                record.response_started = True
                if record.hang_up_watch is not None:  # the response watches from now on
                    record.hang_up_watch.cancel()
                headers = list(message.get("headers", ()))
                record.sse = any(
                    k == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers
                )
                headers.append(id_header)
                lines = record.limit_headers
                if lines:
                    add_lines = scope.get(HEAD_LINES)
                    if add_lines is None or not add_lines(scope, lines):
                        headers += header_pairs(lines)
                await send({**message, "headers": headers})
                return
            record.sending_since = loop.time()
            try:
                await send(message)
            finally:
                record.sending_since = 0.0

        counted = False
        exc_info: BaseException | None = None
        try:
            refusal = self._admit(scope, record)
            key, counters = record.virtual_key, self.counters
            if refusal is None and key is not None and counters is not None and not record.public:
                if counters.redis is None:  # in this process: no await
                    refusal = self._count_key(record, key, counters)
                else:
                    refusal = await self._count_key_shared(record, key, counters)
            if refusal is not None:
                await _send_error(scope, guarded_send, refusal, record)
                return
            self.in_flight[record.client] += 1
            counted = True
            self.active.add(record)
            try:
                await self.app(scope, guarded_receive, guarded_send)
            except asyncio.CancelledError:
                task = record.task
                if record.cut_reason is None or task is None:
                    raise
                task.uncancel()
                await self._end_cut(scope, record, guarded_send)
            except Exception as exc:  # a bug: log it once, answer in OpenAI's shape
                exc_info = exc
                record.error = "internal_error"
                if record.response_started and record.sse:
                    record.outcome = "error"
                error = ServerError("The server had an error while processing your request.")
                await _answer_error(scope, guarded_send, error, record)
            else:
                task = record.task
                if record.cut_reason is not None and task is not None and task.cancelling():
                    task.uncancel()  # the cut came too late to matter
        finally:
            if record.hang_up_watch is not None:
                record.hang_up_watch.cancel()
            self.active.discard(record)
            key = record.virtual_key
            if record.limit_counted and key is not None and self.counters is not None:
                used = (record.prompt_tokens or 0) + (record.completion_tokens or 0)
                self.counters.release(key, record.id, used, record.limit_shared)
            if counted:
                self.in_flight[record.client] -= 1
                if not self.in_flight[record.client]:
                    del self.in_flight[record.client]
            elapsed_ms = (time.perf_counter() - record.started) * 1000
            self._log(record, exc_info or record.exception, elapsed_ms)
            if record.reserved_shared and self.charge is not None:
                self.charge(record)
            if self.telemetry is not None or self.on_finished is not None:
                ended = self._ended
                ended.append((record, elapsed_ms))
                if len(ended) >= COUNT_EVERY_REQUESTS:
                    self.count_ended()
                elif len(ended) == 1:
                    loop.call_later(COUNT_EVERY_S, self.count_ended)
            if span is not None:
                span.finish(record, scope)
            REQUEST_ID.reset(token)
            # the record is in the scope the server keeps until the connection is collected:
            # what it holds of this request's task goes with the request, not with the garbage
            record.task = record.receive = record.hang_up_watch = None

    def _admit(self, scope: Scope, record: RequestRecord) -> InterferenceError | None:
        """Why this request is refused before it reaches a route (None: it may go on)."""
        public = scope["path"] in PUBLIC_PATHS or scope["path"].startswith(PUBLIC_PREFIX)
        record.public = public
        if self.keyed:
            refusal = self._authenticate(presented_key(scope), record)
            if refusal is not None and not public:
                return refusal
        else:
            record.authorized = True
        if self.draining and not public:
            return ModelNotReadyError(
                "The server is shutting down; send the request again in a moment.",
                code="server_shutting_down",
                headers={"connection": "close", "retry-after": "1"},
            )
        limit = self.limits.max_concurrent_per_client
        if (
            self.in_flight[record.client] >= limit
            and not public
            and (self.keyed or not is_local(record.client))
        ):
            who = "an API key" if self.keyed else "a client address"
            self.limit_warnings.refused(
                "limits.max_concurrent_per_client",
                f"{who} had {limit} requests in flight: one more was answered 429",
            )
            return RateLimitError(
                f"Too many concurrent requests from this client: at most {limit} may be in "
                "flight at once.",
                code="concurrency_limit_exceeded",
                headers={"retry-after": "1"},
            )
        return None

    def _count_key(
        self, record: RequestRecord, key: KeyRecord, counters: KeyCounters
    ) -> InterferenceError | None:
        """Count the request against its virtual key's limits in this process; the 429 when
        they refuse it."""
        try:
            record.limit_headers = counters.local.admit(key)
        except RateLimitError as refused:
            return refused
        record.limit_counted = bool(record.limit_headers) or key.max_parallel is not None
        return None

    async def _count_key_shared(
        self, record: RequestRecord, key: KeyRecord, counters: KeyCounters
    ) -> InterferenceError | None:
        """:meth:`_count_key` in Redis."""
        if not limited(key):
            return None
        try:
            record.limit_headers, record.limit_shared = await counters.admit(key, record.id)
        except RateLimitError as refused:
            return refused
        record.limit_counted = True
        return None

    def _authenticate(self, key: str | None, record: RequestRecord) -> InterferenceError | None:
        """Who presents ``key``: the administrator (master key), a configured key or a virtual
        key (:mod:`interference.store.keys`); the refusal when none, or a blocked or expired
        virtual key."""
        if key is None:
            return AuthenticationError(
                "Missing API key: send it as `Authorization: Bearer KEY` (or `x-api-key: KEY`).",
                code="missing_api_key",
            )
        virtual = self.virtual_keys.find(key) if self.virtual_keys is not None else None
        if virtual is not None:
            now = time.time()
            if virtual.blocked:
                return AuthenticationError("This API key is blocked.", code="key_blocked")
            if virtual.expires_at is not None and virtual.expired(now):
                return AuthenticationError("This API key has expired.", code="key_expired")
            virtual.last_used_at = now  # written by the next KeyStore.refresh
            record.virtual_key = virtual
            record.authorized = True
            record.client = KeyRing.digest_label(virtual.digest)  # the key is hashed once
            return None
        if self.master.accepts(key):
            record.admin = True
        elif not self.keys.accepts(key):
            return AuthenticationError("Incorrect API key provided.")
        record.authorized = True
        record.client = KeyRing.client_label(key)
        return None

    async def _end_cut(self, scope: Scope, record: RequestRecord, send: Send) -> None:
        reason = record.cut_reason
        record.outcome = reason
        if reason == "slow_client":  # it takes no data: anything more would wait as well
            RESPONSE_CUT.set(True)
            return
        if reason == "client_closed":  # nobody to answer
            record.status, record.error = 499, "client_closed"
            return
        error: InterferenceError = ModelNotReadyError(
            "The server is shutting down; this request was ended before it finished.",
            code="server_shutting_down",
        )
        if reason == "body_timeout":
            error = RequestTimeoutError(
                f"The request body did not arrive within {self.limits.body_timeout_s:g} s."
            )
        await _answer_error(scope, send, error, record)

    def _log(self, record: RequestRecord, exc: BaseException | None, elapsed: float) -> None:
        failed = record.status >= 500 or record.outcome in _FAILED
        level = logging.ERROR if exc else logging.WARNING if failed else logging.INFO
        if not logger.isEnabledFor(level):
            return
        logger.log(
            level,
            "%s %s %d",
            record.method,
            record.path,
            record.status,
            exc_info=exc,
            extra={"fields": record.fields(elapsed), "request_id": record.id},
        )


async def _send_error(
    scope: Scope, send: Send, error: InterferenceError, record: RequestRecord
) -> None:
    record.error, record.error_message = error.code, error.message
    await error_response(error, dialect_of(scope["path"]))(scope, _no_receive, send)


async def _no_receive() -> Message:
    raise RuntimeError("an error answer reads nothing")


async def _answer_error(
    scope: Scope, send: Send, error: InterferenceError, record: RequestRecord
) -> None:
    """Answer ``error`` in the shape the response allows: a JSON error before the response
    began, a last event (then ``[DONE]``) in a stream; half a JSON body cannot be mended, so
    the connection is closed."""
    with contextlib.suppress(OSError):
        if not record.response_started:
            await _send_error(scope, send, error, record)
        elif record.sse:
            record.error = error.code
            body = stream_error(error, dialect_of(scope["path"]))
            await send({"type": "http.response.body", "body": body, "more_body": False})
        else:
            RESPONSE_CUT.set(True)
