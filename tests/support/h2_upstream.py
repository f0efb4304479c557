"""A real HTTP/2 fake upstream on 127.0.0.1, written with h2's server side, for the HTTP/2
client's tests: h2c with prior knowledge, or TLS offering ``h2`` by ALPN.

It answers ``POST /v1/chat/completions`` as an OpenAI-compatible server does, streamed (SSE) or
not, and misbehaves on demand (:class:`H2Faults`): a limit on concurrent streams, GOAWAY after
some streams on each connection, a reset of chosen requests, slow chunks, an error status.
:class:`H2Observed` records what it saw: connections, requests, resets from the client, the most
streams open at once on one connection. It runs in a thread with its own event loop.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from tests.support.upstream import loopback_socket

_State = h2.connection.ConnectionState
_Input = h2.connection.ConnectionInputs


class _ServerGoawayKeepsStreams(h2.connection.H2ConnectionStateMachine):
    """h2 would refuse every frame after the GOAWAY it sends; a server that goes away
    gracefully keeps reading (RFC 9113 §6.8), and ignores the streams above the last one."""

    _transitions = {  # noqa: RUF012 (h2 declares it so)
        **h2.connection.H2ConnectionStateMachine._transitions,
        (_State.SERVER_OPEN, _Input.SEND_GOAWAY): (None, _State.SERVER_OPEN),
    }


@dataclass
class H2Faults:
    """How the upstream misbehaves (tests set these before the requests they concern)."""

    max_concurrent_streams: int = 100  # its SETTINGS_MAX_CONCURRENT_STREAMS (new connections)
    goaway_after: int | None = None  # GOAWAY once a connection has received this many streams
    reset_requests: set[int] = field(default_factory=set)  # these requests (1-based) get a
    # RST_STREAM (INTERNAL_ERROR) after their head and first chunk
    chunk_delay: float = 0.0  # between streamed chunks
    status: int | None = None  # answer this status with an error body
    declared_length: int | None = None  # a non-streamed answer's content-length, as given
    body_size: int | None = None  # a non-streamed answer of this many bytes (not JSON)


@dataclass
class H2Observed:
    connections: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    client_resets: list[int] = field(default_factory=list)  # error codes of RST_STREAM
    completed_streams: int = 0
    most_streams_at_once: int = 0  # on one connection


class _ServerConnection(asyncio.Protocol):
    def __init__(self, upstream: H2Upstream) -> None:
        self.upstream = upstream
        self.faults = upstream.faults
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.h2.state_machine = _ServerGoawayKeepsStreams()
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.faults.max_concurrent_streams
            },
        )
        self.transport: asyncio.Transport | None = None
        self.requests: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.received = 0  # streams received on this connection
        self.last_stream_id: int | None = None  # set once GOAWAY is sent
        self.window_open = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.upstream.observed.connections += 1
        self.upstream.open_connections.add(self)
        self.h2.initiate_connection()
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            self.handle(event)
        self.flush()

    def handle(self, event: h2.events.Event) -> None:
        observed = self.upstream.observed
        if isinstance(event, h2.events.RequestReceived):
            self.received += 1
            if self.last_stream_id is not None and event.stream_id > self.last_stream_id:
                return  # after GOAWAY: not processed
            headers = {str(name): str(value) for name, value in event.headers or []}
            self.requests[event.stream_id] = (headers, bytearray())
            open_now = len(self.requests)
            observed.most_streams_at_once = max(observed.most_streams_at_once, open_now)
            goaway_after = self.faults.goaway_after
            if goaway_after is not None and self.received == goaway_after:
                self.last_stream_id = event.stream_id
                self.h2.close_connection(last_stream_id=event.stream_id)
        elif isinstance(event, h2.events.DataReceived):
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if event.stream_id in self.requests:
                self.requests[event.stream_id][1].extend(event.data or b"")
        elif isinstance(event, h2.events.StreamEnded):
            if event.stream_id in self.requests:
                task = asyncio.get_running_loop().create_task(self.answer(event.stream_id))
                self.tasks[event.stream_id] = task
        elif isinstance(event, h2.events.StreamReset):
            observed.client_resets.append(int(event.error_code or 0))
            self.requests.pop(event.stream_id or 0, None)
            task = self.tasks.pop(event.stream_id or 0, None)
            if task is not None:
                task.cancel()
            self.done()
        elif isinstance(event, h2.events.WindowUpdated):
            self.window_open.set()

    def done(self) -> None:
        """After GOAWAY, the connection closes once its last processed stream has ended."""
        if self.last_stream_id is not None and not self.requests and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.upstream.open_connections.discard(self)
        for task in self.tasks.values():
            task.cancel()

    async def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        while data:
            window = min(
                self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size
            )
            if window <= 0:
                self.window_open.clear()
                await self.window_open.wait()
                continue
            piece, data = data[:window], data[window:]
            self.h2.send_data(stream_id, piece, end_stream=end and not data)
            self.flush()

    async def answer(self, stream_id: int) -> None:
        upstream, faults = self.upstream, self.faults
        headers, raw = self.requests[stream_id]
        body = json.loads(bytes(raw) or b"{}")
        upstream.observed.requests.append(body)
        upstream.observed.headers.append(headers)
        number = len(upstream.observed.requests)
        try:
            if faults.status is not None:
                error = json.dumps({"error": {"message": f"says {faults.status}", "type": "x"}})
                self.respond_head(stream_id, faults.status, "application/json")
                await self.send(stream_id, error.encode(), end=True)
            elif not body.get("stream"):
                content = json.dumps(upstream.completion(body)).encode()
                if faults.body_size is not None:
                    content = b"x" * faults.body_size
                length = faults.declared_length or len(content)
                self.respond_head(stream_id, 200, "application/json", length)
                if faults.declared_length is not None:  # the client judges by the head alone
                    await asyncio.sleep(0.5)
                await self.send(stream_id, content, end=True)
            else:
                self.respond_head(stream_id, 200, "text/event-stream")
                for i, event in enumerate(upstream.events(body)):
                    if i and faults.chunk_delay:
                        await asyncio.sleep(faults.chunk_delay)
                    if i == 1 and number in faults.reset_requests:
                        self.h2.reset_stream(stream_id, ErrorCodes.INTERNAL_ERROR)
                        self.flush()
                        return
                    await self.send(stream_id, event)
                self.h2.end_stream(stream_id)
                self.flush()
            upstream.observed.completed_streams += 1
        except h2.exceptions.StreamClosedError:
            pass  # the client reset it meanwhile
        finally:
            self.requests.pop(stream_id, None)
            self.tasks.pop(stream_id, None)
            self.done()

    def respond_head(
        self, stream_id: int, status: int, content_type: str, length: int | None = None
    ) -> None:
        head = [(":status", str(status)), ("content-type", content_type)]
        if length is not None:
            head.append(("content-length", str(length)))
        self.h2.send_headers(stream_id, head)
        self.flush()


class H2Upstream:
    """``tls``: (certificate, key) PEM files to serve https on ``localhost`` with, offering
    ``h2`` by ALPN; else h2c with prior knowledge on 127.0.0.1."""

    def __init__(self, name: str = "h2", words: int = 4, tls: tuple[str, str] | None = None):
        self.name = name
        self.words = words
        self.faults = H2Faults()
        self.observed = H2Observed()
        self._sock = loopback_socket()
        self.port = self._sock.getsockname()[1]
        self.url = f"https://localhost:{self.port}" if tls else f"http://127.0.0.1:{self.port}"
        self._ssl: ssl.SSLContext | None = None
        if tls is not None:
            self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ssl.load_cert_chain(*tls)
            self._ssl.set_alpn_protocols(["h2"])
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.open_connections: set[_ServerConnection] = set()

    def text(self) -> list[str]:
        return [f"Hello from {self.name}"] + [f" w{i}" for i in range(self.words - 1)]

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{self.name}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "m"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(self.text())},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": self.words, "total_tokens": 7},
        }

    def events(self, body: dict[str, Any]) -> Iterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            event = {
                "id": f"chatcmpl-{self.name}",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body.get("model", "m"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(event)}\n\n".encode()

        yield chunk({"role": "assistant", "content": ""})
        for piece in self.text():
            yield chunk({"content": piece})
        yield chunk({}, "stop")
        yield b"data: [DONE]\n\n"

    def reset(self) -> None:
        self.faults = H2Faults()
        self.observed = H2Observed()

    def start(self) -> H2Upstream:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            self._loop.create_server(
                lambda: _ServerConnection(self), sock=self._sock, ssl=self._ssl
            ),
            self._loop,
        )
        self._server = future.result(timeout=10)
        return self

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self.open_connections):
            if connection.transport is not None:
                connection.transport.abort()
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
        self._sock.close()

    def __enter__(self) -> H2Upstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def h2_upstream(
    name: str = "h2", words: int = 4, tls: tuple[str, str] | None = None
) -> Iterator[H2Upstream]:
    with H2Upstream(name, words, tls) as upstream:
        yield upstream
