"""A closed-loop HTTP/1.1 load generator over raw asyncio streams.

``concurrency`` workers each hold one keep-alive connection and send a pre-built request,
read the whole answer, and send the next, until ``total`` requests have been sent or
``time_limit_s`` has passed, whichever comes first. Each answer is checked (status 200; a stream
must end with ``data: [DONE]``) and timed: total latency, and for streams the time to the first
``data:`` event (TTFT) and the arrival of every event, measured from the moment the request was
written. Run it under uvloop (:func:`run`) for the least client-side overhead.

    result = loadgen.run("127.0.0.1", 8000, loadgen.chat_request(...), total=1000, concurrency=16)
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: A check of a whole answer body: None when it is good, else what is wrong.
Validator = Callable[[bytes], str | None]

DONE = b"data: [DONE]"


def chat_request(
    host: str,
    port: int,
    model: str,
    stream: bool,
    path: str = "/v1/chat/completions",
    prompt: str = "Say hello.",
    max_tokens: int = 64,
    headers: dict[str, str] | None = None,
) -> bytes:
    """The bytes of one ``POST /v1/chat/completions`` request (keep-alive, JSON body), with
    ``headers`` (an ``authorization``, say) added."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
    return post_request(host, port, path, json.dumps(body).encode(), headers)


def post_request(
    host: str, port: int, path: str, body: bytes, headers: dict[str, str] | None = None
) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\n"
        f"content-type: application/json\r\naccept: */*\r\n{extra}"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class ResponseError(Exception):
    """An answer that is not what the benchmark expects (bad status, malformed, cut)."""


@dataclass
class Sample:
    """One answered request; times in seconds from the moment the request was written."""

    latency: float
    ttft: float | None = None
    events: list[float] = field(default_factory=list)  # arrival of each SSE event
    event_data: list[bytes] = field(default_factory=list)  # only with keep_events
    body: bytes | None = None  # only with keep_bodies


def percentile(ordered: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of sorted values, linearly interpolated; NaN if empty."""
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class LoadResult:
    """What one load run measured. Latencies in milliseconds."""

    requests: int  # answered and good
    errors: int
    duration_s: float
    rps: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    ttft_p99_ms: float
    timed_out: bool  # the time bound stopped the run before ``total`` requests
    first_error: str | None
    samples: list[Sample] = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """The figures, without the per-request samples (for JSON)."""
        return {k: v for k, v in self.__dict__.items() if k != "samples"}


def summarize(
    samples: list[Sample], errors: list[str], duration: float, timed_out: bool
) -> LoadResult:
    latencies = sorted(s.latency * 1000 for s in samples)
    ttfts = sorted(s.ttft * 1000 for s in samples if s.ttft is not None)
    return LoadResult(
        requests=len(samples),
        errors=len(errors),
        duration_s=duration,
        rps=len(samples) / duration if duration > 0 else 0.0,
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        latency_p99_ms=percentile(latencies, 99),
        ttft_p50_ms=percentile(ttfts, 50),
        ttft_p95_ms=percentile(ttfts, 95),
        ttft_p99_ms=percentile(ttfts, 99),
        timed_out=timed_out,
        first_error=errors[0] if errors else None,
        samples=samples,
    )


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ResponseError(f"bad status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


class Events:
    """Splits a streamed body into SSE events as it arrives and times each ``data:`` event."""

    def __init__(self, started: float, keep: bool) -> None:
        self.started = started
        self.keep = keep
        self.pending = b""
        self.times: list[float] = []
        self.data: list[bytes] = []

    def feed(self, piece: bytes) -> None:
        if b"\r" in piece:
            piece = piece.replace(b"\r\n", b"\n")
        self.pending += piece
        if b"\n\n" not in self.pending:
            return
        now = time.perf_counter() - self.started
        *events, self.pending = self.pending.split(b"\n\n")
        for event in events:
            if event.startswith(b"data:") or b"\ndata:" in event:
                self.times.append(now)
                if self.keep:
                    self.data.append(event)


async def read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], events: Events | None
) -> tuple[bytes, bool]:
    """The body, and whether the connection can be reused."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                break
            piece = (await reader.readexactly(size + 2))[:-2]
            parts.append(piece)
            if events is not None:
                events.feed(piece)
        body = b"".join(parts)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
        if events is not None:
            events.feed(body)
    else:  # delimited by the end of the connection
        body = await reader.read()
        if events is not None:
            events.feed(body)
        return body, False
    return body, headers.get("connection", "").lower() != "close"


@dataclass
class _Plan:
    host: str
    port: int
    request: bytes
    stream: bool
    remaining: int
    deadline: float
    request_timeout_s: float
    keep_events: bool
    keep_bodies: bool
    validate: Validator | None
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def take(self) -> bool:
        if self.remaining <= 0 or time.perf_counter() >= self.deadline:
            return False
        self.remaining -= 1
        return True


async def _exchange(
    plan: _Plan, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[Sample, bool]:
    started = time.perf_counter()
    writer.write(plan.request)
    status, headers = await read_head(reader)
    events = Events(started, plan.keep_events) if plan.stream else None
    body, reusable = await read_body(reader, headers, events)
    latency = time.perf_counter() - started
    if status != 200:
        raise ResponseError(f"status {status}: {body[:200]!r}")
    sample = Sample(latency)
    if events is not None:
        if not body.rstrip().endswith(DONE):
            raise ResponseError(f"stream does not end with [DONE]: ...{body[-100:]!r}")
        sample.events = events.times
        sample.event_data = events.data
        sample.ttft = events.times[0] if events.times else None
    if plan.validate is not None and (problem := plan.validate(body)):
        raise ResponseError(problem)
    if plan.keep_bodies:
        sample.body = body
    return sample, reusable


FAILURES = (OSError, EOFError, ValueError, ResponseError, TimeoutError, asyncio.LimitOverrunError)


class Connection:
    """One keep-alive connection to ``host:port``, opened when first needed and again after
    :meth:`close` (once an answer left it unusable); closed on leaving its ``with`` block."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def open(self, timeout_s: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The connection's streams, connecting first (within ``timeout_s``) if it is closed."""
        if self._streams is None:
            self._streams = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), timeout_s
            )
        return self._streams

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _worker(plan: _Plan) -> None:
    """Send requests over one connection (reopened after an error) while the plan has some."""
    with Connection(plan.host, plan.port) as connection:
        while plan.take():
            try:
                streams = await connection.open(plan.request_timeout_s)
                sample, reusable = await asyncio.wait_for(
                    _exchange(plan, *streams), plan.request_timeout_s
                )
                plan.samples.append(sample)
            except FAILURES as exc:
                plan.errors.append(f"{type(exc).__name__}: {exc}")
                reusable = False
            if not reusable:
                connection.close()


async def run_async(
    host: str,
    port: int,
    request: bytes,
    *,
    total: int,
    concurrency: int,
    stream: bool,
    time_limit_s: float = 60.0,
    request_timeout_s: float = 30.0,
    keep_events: bool = False,
    keep_bodies: bool = False,
    validate: Validator | None = None,
) -> LoadResult:
    """Send ``total`` copies of ``request`` over ``concurrency`` connections (in this loop).

    No new request starts after ``time_limit_s``; one in flight then may run on for up to
    ``request_timeout_s`` more (it is cancelled and counted as an error past that).
    """
    started = time.perf_counter()
    plan = _Plan(
        host,
        port,
        request,
        stream,
        remaining=total,
        deadline=started + time_limit_s,
        request_timeout_s=request_timeout_s,
        keep_events=keep_events,
        keep_bodies=keep_bodies,
        validate=validate,
    )
    workers = [asyncio.create_task(_worker(plan)) for _ in range(max(1, min(concurrency, total)))]
    await asyncio.gather(*workers)
    duration = time.perf_counter() - started
    timed_out = plan.remaining > 0
    return summarize(plan.samples, plan.errors, duration, timed_out)


def event_loop_factory() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is installed, else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(host: str, port: int, request: bytes, **options: Any) -> LoadResult:
    """:func:`run_async` in a fresh event loop (uvloop when installed)."""
    with asyncio.Runner(loop_factory=event_loop_factory) as runner:
        return runner.run(run_async(host, port, request, **options))
