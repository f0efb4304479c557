"""A fake OpenAI-compatible upstream built to cost as little CPU per request as possible.

It is a raw asyncio ``Protocol`` HTTP/1.1 server (uvloop when importable) with keep-alive: it
parses the request head and the Content-Length body and answers with response bytes rendered
once at start, so that a benchmark of a gateway in front of it measures the gateway, not the
upstream.

- ``POST /v1/chat/completions``: a ``chat.completion`` with usage, or, when the body contains
  ``"stream": true``, an SSE stream (chunked transfer-encoding) of ``chat.completion.chunk``
  events: one with ``delta: {"role": "assistant", "content": ""}``, ``--chunks`` content deltas
  of a few characters, one with ``finish_reason: "stop"``, one with ``choices: []`` and usage,
  then ``data: [DONE]``. Every event is a write of its own, ``--delay-ms`` apart.
- ``GET /v1/models``: the one model, ``bench-model``.

With ``--http2`` it also speaks HTTP/2 (h2c with prior knowledge: bench/fake_upstream_h2.py) on
connections that open with HTTP/2's preface, allowing ``--h2-max-streams`` streams on each (100,
as many cloud APIs), with the same answers; HTTP/1.1 connections are served as before.

    .venv/bin/python bench/fake_upstream.py [--port 0] [--chunks 50] [--delay-ms 0] [--http2]

With ``--port 0`` it picks a free port; either way it prints ``listening on
http://127.0.0.1:PORT`` once it accepts connections. In-process (tests):
``await start_upstream(...)`` in a running loop, or ``with upstream_in_thread(...) as up:``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from fake_upstream_h2 import Http2UpstreamProtocol, response_head

MODEL = "bench-model"
HOST = "127.0.0.1"
#: Content deltas cycle through these (a few characters each, like tokens).
WORDS = ("Hello", ",", " this", " is", " a", " bench", "mark", " answer", ".")
MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
STREAM_FLAG = re.compile(rb'"stream"\s*:\s*true')


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _response(status: str, content_type: bytes, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: ".encode()
        + content_type
        + f"\r\ncontent-length: {len(body)}\r\n\r\n".encode()
    )
    return head + body


def _http_chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _usage(completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": 12,
        "completion_tokens": completion_tokens,
        "total_tokens": 12 + completion_tokens,
    }


@dataclass(frozen=True)
class Rendered:
    """Every answer the upstream gives, as the bytes it writes."""

    completion: bytes
    stream_head: bytes
    stream_events: tuple[bytes, ...]  # HTTP chunks; the last one also ends the body
    models: bytes
    not_found: bytes
    bad_request: bytes
    # the same answers over HTTP/2: HPACK blocks of the heads, and bodies
    h2_completion: tuple[bytes, bytes]
    h2_stream_head: bytes
    h2_events: tuple[bytes, ...]  # one DATA payload each
    h2_models: tuple[bytes, bytes]
    h2_not_found: tuple[bytes, bytes]


def render(chunks: int, created: int | None = None) -> Rendered:
    """Render the answers of an upstream whose streams have ``chunks`` content deltas."""
    created = int(time.time()) if created is None else created
    words = [WORDS[i % len(WORDS)] for i in range(chunks)]
    completion = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": created,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(words), "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(chunks),
    }

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        event: dict[str, Any] = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL,
            "choices": choices,
        }
        if usage is not None:
            event["usage"] = usage
        return b"data: " + _json(event) + b"\n\n"

    def choice(delta: dict[str, str], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    events = [chunk(choice({"role": "assistant", "content": ""}))]
    events += [chunk(choice({"content": word})) for word in words]
    events.append(chunk(choice({}, "stop")))
    events.append(chunk([], _usage(chunks)))
    events.append(b"data: [DONE]\n\n")
    http_chunks = [_http_chunk(event) for event in events]
    http_chunks[-1] += b"0\r\n\r\n"
    models = {
        "object": "list",
        "data": [{"id": MODEL, "object": "model", "created": created, "owned_by": "bench"}],
    }

    def error(message: str, kind: str) -> bytes:
        return _json({"error": {"message": message, "type": kind, "param": None, "code": None}})

    def h2_answer(status: int, body: bytes) -> tuple[bytes, bytes]:
        return response_head(status, b"application/json", len(body)), body

    not_found = error("not found", "not_found")
    return Rendered(
        completion=_response("200 OK", b"application/json", _json(completion)),
        stream_head=(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
        ),
        stream_events=tuple(http_chunks),
        models=_response("200 OK", b"application/json", _json(models)),
        not_found=_response("404 Not Found", b"application/json", not_found),
        bad_request=_response(
            "400 Bad Request", b"application/json", error("bad request", "invalid_request_error")
        ),
        h2_completion=h2_answer(200, _json(completion)),
        h2_stream_head=response_head(200, b"text/event-stream"),
        h2_events=tuple(events),
        h2_models=h2_answer(200, _json(models)),
        h2_not_found=h2_answer(404, not_found),
    )


@dataclass
class Stats:
    """What the upstream answered (read by tests; plain counters, no lock needed in one loop)."""

    completions: int = 0
    streams: int = 0
    connections: int = 0
    http2_connections: int = 0  # of ``connections``


class UpstreamProtocol(asyncio.Protocol):
    """One client connection: parse requests as they come, answer them in order."""

    def __init__(
        self, rendered: Rendered, delay_s: float, stats: Stats, http2_streams: int = 0
    ) -> None:
        self.rendered = rendered
        self.delay_s = delay_s
        self.stats = stats
        self.http2_streams = http2_streams  # 0: HTTP/1.1 only
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.streaming: asyncio.Task[None] | None = None  # a delayed stream being written
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.streaming is not None:
            self.streaming.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.http2_streams and self.buffer[:3] == b"PRI":  # HTTP/2's preface, no method
            self._speak_http2()
            return
        self._process()

    def _speak_http2(self) -> None:
        assert self.transport is not None
        self.stats.http2_connections += 1
        protocol = http2_protocol(self.rendered, self.delay_s, self.stats, self.http2_streams)
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        protocol.data_received(bytes(self.buffer))

    def _process(self) -> None:
        """Answer every complete request in the buffer, unless a stream is still being sent."""
        while self.streaming is None and not self.closing:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self._fail(self.rendered.bad_request)
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            method, _, rest = head.partition(" ")
            path = rest.partition(" ")[0]
            length, keep_alive = 0, True
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value) if value.strip().isdigit() else -1
                elif name == "connection":
                    keep_alive = value.strip().lower() != "close"
                elif name == "transfer-encoding":
                    length = -1  # chunked request bodies are not supported
            if not 0 <= length <= MAX_BODY:
                self._fail(self.rendered.bad_request)
                return
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            self._answer(method, path, body)
            if not keep_alive:
                self._close_after_writes()

    def _answer(self, method: str, path: str, body: bytes) -> None:
        assert self.transport is not None
        path = path.partition("?")[0]
        if method == "POST" and path == "/v1/chat/completions":
            if STREAM_FLAG.search(body):
                self.stats.streams += 1
                self._stream()
            else:
                self.stats.completions += 1
                self.transport.write(self.rendered.completion)
        elif method == "GET" and path == "/v1/models":
            self.transport.write(self.rendered.models)
        else:
            self.transport.write(self.rendered.not_found)

    def _stream(self) -> None:
        assert self.transport is not None
        self.transport.write(self.rendered.stream_head)
        if self.delay_s <= 0:
            for event in self.rendered.stream_events:
                self.transport.write(event)
            return
        self.streaming = asyncio.get_running_loop().create_task(self._stream_slowly())

    async def _stream_slowly(self) -> None:
        assert self.transport is not None
        for i, event in enumerate(self.rendered.stream_events):
            if i:
                await asyncio.sleep(self.delay_s)
            if self.transport.is_closing():
                return
            self.transport.write(event)
        self.streaming = None
        self._process()  # requests that arrived while the stream was being sent

    def _fail(self, response: bytes) -> None:
        assert self.transport is not None
        self.transport.write(response)
        self._close_after_writes()

    def _close_after_writes(self) -> None:
        assert self.transport is not None
        self.closing = True
        if self.streaming is None:
            self.transport.close()  # flushes what was written first
        else:
            self.streaming.add_done_callback(lambda _: self.transport and self.transport.close())


def http2_protocol(
    rendered: Rendered, delay_s: float, stats: Stats, max_streams: int
) -> Http2UpstreamProtocol:
    """An HTTP/2 connection giving the same answers as :class:`UpstreamProtocol`."""

    def answer(method: str, path: str, body: bytes, stream_id: int) -> None:
        path = path.partition("?")[0]
        if method == "POST" and path == "/v1/chat/completions":
            if STREAM_FLAG.search(body):
                stats.streams += 1
                protocol.head(stream_id, rendered.h2_stream_head)
                if delay_s <= 0:
                    for event in rendered.h2_events[:-1]:
                        protocol.data(stream_id, event)
                    protocol.data(stream_id, rendered.h2_events[-1], end=True)
                else:
                    task = asyncio.get_running_loop().create_task(slowly(stream_id))
                    protocol.streaming[stream_id] = task
                return
            stats.completions += 1
            head, content = rendered.h2_completion
        elif method == "GET" and path == "/v1/models":
            head, content = rendered.h2_models
        else:
            head, content = rendered.h2_not_found
        protocol.head(stream_id, head)
        protocol.data(stream_id, content, end=True)

    async def slowly(stream_id: int) -> None:
        events = rendered.h2_events
        try:
            for i, event in enumerate(events):
                if i:
                    await asyncio.sleep(delay_s)
                if protocol.transport is None or protocol.transport.is_closing():
                    return
                protocol.data(stream_id, event, end=i == len(events) - 1)
        finally:
            protocol.streaming.pop(stream_id, None)

    protocol = Http2UpstreamProtocol(answer, max_streams)
    return protocol


@dataclass
class Upstream:
    """A running fake upstream."""

    server: asyncio.Server
    port: int
    stats: Stats = field(default_factory=Stats)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def aclose(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def start_upstream(
    port: int = 0, chunks: int = 50, delay_ms: float = 0.0, http2_streams: int = 0
) -> Upstream:
    """Start a fake upstream on 127.0.0.1 in the running event loop (``http2_streams``: speak
    HTTP/2 too, that many streams a connection)."""
    rendered = render(chunks)
    stats = Stats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(rendered, delay_ms / 1000, stats, http2_streams),
        HOST,
        port,
        backlog=4096,
    )
    bound = server.sockets[0].getsockname()[1]
    return Upstream(server, bound, stats)


@contextlib.contextmanager
def upstream_in_thread(
    chunks: int = 50, delay_ms: float = 0.0, http2_streams: int = 0
) -> Iterator[Upstream]:
    """Run a fake upstream in a background thread with its own loop (for synchronous tests)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-upstream", daemon=True)
    thread.start()
    upstream: Upstream | None = None
    try:
        upstream = asyncio.run_coroutine_threadsafe(
            start_upstream(0, chunks, delay_ms, http2_streams), loop
        ).result(timeout=10)
        yield upstream
    finally:
        if upstream is not None:
            asyncio.run_coroutine_threadsafe(upstream.aclose(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def event_loop_factory() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is installed, else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _serve(port: int, chunks: int, delay_ms: float, http2_streams: int) -> None:
    upstream = await start_upstream(port, chunks, delay_ms, http2_streams)
    print(f"listening on {upstream.url}", flush=True)
    async with upstream.server:
        await upstream.server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0: pick a free port")
    parser.add_argument("--chunks", type=int, default=50, help="content deltas per stream")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="between stream events")
    parser.add_argument("--http2", action="store_true", help="speak h2c (prior knowledge) too")
    parser.add_argument("--h2-max-streams", type=int, default=100, help="per HTTP/2 connection")
    args = parser.parse_args()
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=event_loop_factory) as runner,
    ):
        runner.run(
            _serve(args.port, args.chunks, args.delay_ms, args.h2_max_streams if args.http2 else 0)
        )


if __name__ == "__main__":
    main()
