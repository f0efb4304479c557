"""The HTTP/2 upstream client against a real HTTP/2 server on 127.0.0.1 (tests/support/
h2_upstream.py): streams multiplexed on few connections within the server's limit, the bounded
wait for a stream slot, GOAWAY and resets, a stream given up, flow control, the bounds, and
``http2: auto`` choosing by ALPN over TLS (issue 18)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trustme
import uvloop

from interference.config import ConfigError, RemoteProviderConfig, config_from_dict
from interference.providers.http import make_client
from interference.telemetry.propagation import UPSTREAM_TRACE
from interference.upstream.client import (
    POOL_WAIT,
    ConnectError,
    PoolFullError,
    PoolWait,
    ProtocolError,
)
from interference.upstream.fast import FastClient
from interference.upstream.http2 import Http2Client
from interference.upstream.http2_connection import _STREAM_WINDOW
from interference.upstream.httpx_client import HttpxClient
from interference.upstream.negotiated import UNDECIDED, NegotiatedClient
from tests.support.h2_upstream import H2Upstream, h2_upstream
from tests.support.openai_fake import openai_upstream
from tests.support.upstream import loopback_socket, refused_url

PATH = "/v1/chat/completions"
STREAM = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
CALL = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
CANCEL = 8  # RST_STREAM's error code when a client gives a stream up


@pytest.fixture(scope="module")
def upstream() -> Iterator[H2Upstream]:
    with h2_upstream("h2") as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(upstream: H2Upstream) -> None:
    upstream.reset()


def run(scenario: Callable[[], Awaitable[None]], seconds: float = 20) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(seconds):
            await scenario()

    asyncio.run(bounded())


def client(upstream: H2Upstream, **options: float) -> Http2Client:
    settings = {"max_connections": 10, "connect_timeout": 2, "pool_timeout": 1, **options}
    return Http2Client(upstream.url, {"authorization": "Bearer k"}, **settings)


async def streamed(http2: Http2Client) -> bytes:
    async with http2.stream("POST", PATH, content=STREAM.encode()) as response:
        assert response.status_code == 200
        return b"".join([block async for block in response.iter_blocks()])


@contextlib.asynccontextmanager
async def held(http2: Http2Client) -> AsyncIterator[None]:
    """A stream whose head has come, holding one stream slot."""
    async with http2.stream("POST", PATH, content=STREAM.encode()) as response:
        assert response.status_code == 200
        yield


async def until(condition: Callable[[], bool], seconds: float = 5) -> None:
    """Poll ``condition`` (what the server thread saw) for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


def test_many_streams_share_one_connection(upstream: H2Upstream) -> None:
    upstream.faults.max_concurrent_streams = 250
    upstream.faults.chunk_delay = 0.02  # they overlap

    async def scenario() -> None:
        http2 = client(upstream)
        try:
            bodies = await asyncio.gather(*(streamed(http2) for _ in range(200)))
            assert all(body.endswith(b"data: [DONE]\n\n") for body in bodies)
            assert b"Hello from h2" in bodies[0]
            stats = http2.pool()
            assert (stats.protocol, stats.open, stats.in_use, stats.waited) == ("HTTP/2", 1, 0, 0)
        finally:
            await http2.aclose()

    run(scenario)
    assert upstream.observed.connections == 1
    assert upstream.observed.completed_streams == 200
    assert upstream.observed.most_streams_at_once > 100


def test_the_servers_stream_limit_is_kept_and_more_connections_opened(
    upstream: H2Upstream,
) -> None:
    upstream.faults.max_concurrent_streams = 5
    upstream.faults.chunk_delay = 0.02

    async def scenario() -> None:
        http2 = client(upstream, max_connections=3)
        try:
            bodies = await asyncio.gather(*(streamed(http2) for _ in range(20)))
            assert all(body.endswith(b"data: [DONE]\n\n") for body in bodies)
            assert http2.pool().open == 3
            assert http2.pool().refused == 0
        finally:
            await http2.aclose()

    run(scenario)
    assert upstream.observed.connections == 3
    assert upstream.observed.most_streams_at_once <= 5


def test_no_free_stream_waits_at_most_pool_timeout_then_fails(upstream: H2Upstream) -> None:
    upstream.faults.max_concurrent_streams = 2
    upstream.faults.chunk_delay = 0.3

    async def scenario() -> None:
        http2 = client(upstream, max_connections=1, pool_timeout=0.3)
        try:
            async with held(http2), held(http2):
                stats = http2.pool()
                assert (stats.in_use, stats.open, stats.waiting) == (2, 1, 0)
                wait = PoolWait()
                POOL_WAIT.set(wait)
                began = time.perf_counter()
                with pytest.raises(PoolFullError, match="all 1 connections"):
                    async with held(http2):
                        pass
                waited = time.perf_counter() - began
                assert 0.3 <= waited < 0.8
                assert wait.seconds == pytest.approx(waited, abs=0.05)
                assert (stats.refused, stats.waited, stats.waiting, stats.in_use) == (1, 1, 0, 2)

                # a stream slot that comes free within the bound is taken: no refusal
                async def third() -> float:
                    mine = PoolWait()
                    POOL_WAIT.set(mine)
                    async with held(http2):
                        return mine.seconds

                waiting = asyncio.create_task(third())
                await asyncio.sleep(0.1)
                assert http2.pool().waiting == 1
            assert 0.05 < await waiting < 0.3  # took a slot the held streams left
            assert (http2.pool().refused, http2.pool().in_use, http2.pool().open) == (1, 0, 1)
            # each stream was left before its end: reset, on the one connection
            await until(lambda: upstream.observed.client_resets == [CANCEL] * 3)
        finally:
            await http2.aclose()

    run(scenario)
    assert upstream.observed.connections == 1


def test_goaway_keeps_the_streams_it_took_and_the_others_are_sent_again(
    upstream: H2Upstream,
) -> None:
    upstream.faults.goaway_after = 2  # each connection: the first two streams, then GOAWAY
    upstream.faults.chunk_delay = 0.05  # so that GOAWAY comes while those two still stream

    async def scenario() -> None:
        http2 = client(upstream)
        try:
            bodies = await asyncio.gather(*(streamed(http2) for _ in range(4)))
            assert all(body.endswith(b"data: [DONE]\n\n") for body in bodies)
        finally:
            await http2.aclose()

    run(scenario)
    assert upstream.observed.connections == 2
    assert upstream.observed.completed_streams == 4  # two on each connection


def test_a_reset_stream_fails_alone_and_its_connection_goes_on(upstream: H2Upstream) -> None:
    upstream.faults.reset_requests = {2}
    upstream.faults.chunk_delay = 0.05

    async def scenario() -> None:
        http2 = client(upstream)
        try:
            results = await asyncio.gather(
                *(streamed(http2) for _ in range(3)), return_exceptions=True
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            assert len(failed) == 1
            assert isinstance(failed[0], ConnectionResetError)
            assert "INTERNAL_ERROR" in str(failed[0])
            assert sum(1 for r in results if isinstance(r, bytes)) == 2
            reply = await http2.post(PATH, content=CALL.encode())
            assert reply.status_code == 200
        finally:
            await http2.aclose()

    run(scenario)
    assert upstream.observed.connections == 1


def test_leaving_a_stream_early_resets_it_and_the_connection_is_reused(
    upstream: H2Upstream,
) -> None:
    upstream.faults.chunk_delay = 0.2

    async def scenario() -> None:
        http2 = client(upstream)
        try:
            async with http2.stream("POST", PATH, content=STREAM.encode()) as response:
                async for _ in response.iter_blocks():
                    break  # the client goes away after the first piece
            await until(lambda: upstream.observed.client_resets == [CANCEL])
            assert http2.pool().in_use == 0
            upstream.faults.chunk_delay = 0
            reply = await http2.post(PATH, content=CALL.encode())
            assert json.loads(reply.content)["choices"][0]["message"]["content"] == (
                "Hello from h2 w0 w1 w2"
            )
        finally:
            await http2.aclose()

    run(scenario)
    assert upstream.observed.connections == 1
    assert upstream.observed.completed_streams == 1


def test_a_slow_reader_bounds_its_buffer_and_stalls_no_other_stream(
    upstream: H2Upstream,
) -> None:
    upstream.faults.body_size = 4 * _STREAM_WINDOW

    async def scenario() -> None:
        http2 = client(upstream)
        try:
            async with http2.stream("POST", PATH, content=CALL.encode()) as big:
                await asyncio.sleep(0.3)  # not read: the server may send one window only
                unread = sum(len(piece) for piece in big._stream.pieces)
                assert 0 < unread <= _STREAM_WINDOW
                upstream.faults.body_size = 10
                other = await asyncio.wait_for(http2.post(PATH, content=CALL.encode()), 2)
                assert other.content == b"x" * 10
                assert len(await big.aread()) == 4 * _STREAM_WINDOW
        finally:
            await http2.aclose()

    run(scenario)
    assert upstream.observed.connections == 1


def test_the_request_head_and_body(upstream: H2Upstream) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "é" * 100_000}]})

    async def scenario() -> None:
        http2 = client(upstream)
        try:
            UPSTREAM_TRACE.set((("traceparent", "00-" + "a" * 32 + "-" + "b" * 16 + "-01"),))
            reply = await http2.post(PATH, content=body.encode(), params={"api-version": "1"})
            assert reply.status_code == 200
        finally:
            await http2.aclose()

    run(scenario)
    head = upstream.observed.headers[0]
    assert head[":method"] == "POST"
    assert head[":scheme"] == "http"
    assert head[":authority"] == f"127.0.0.1:{upstream.port}"
    assert head[":path"] == "/v1/chat/completions?api-version=1"
    assert head["authorization"] == "Bearer k"
    assert head["accept-encoding"] == "identity"
    assert head["user-agent"].startswith("interference/")
    assert head["traceparent"].startswith("00-aaaa")
    assert int(head["content-length"]) == len(body.encode())  # over several windows
    assert upstream.observed.requests[0] == json.loads(body)


class PiecesBody:
    """A request body read as it is sent (an upload's BodyStream), in uneven pieces."""

    content_type = "application/json"

    def __init__(self, data: bytes, piece: int) -> None:
        self.data, self.piece, self.length, self.reads = data, piece, len(data), 0

    async def pieces(self) -> AsyncIterator[bytes]:
        self.reads += 1
        for start in range(0, len(self.data), self.piece):
            yield self.data[start : start + self.piece]


def test_a_body_sent_in_pieces_arrives_whole(upstream: H2Upstream) -> None:
    """An upload (a BodyStream) goes out piece by piece, over several flow-control windows,
    with its declared length, and ends the request."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 300_000}]})
    data = body.encode()
    upload = PiecesBody(data, 70_001)

    async def scenario() -> None:
        http2 = client(upstream)
        try:
            reply = await http2.post(PATH, content=upload)
            assert reply.status_code == 200
        finally:
            await http2.aclose()

    run(scenario)
    assert upload.reads == 1
    assert int(upstream.observed.headers[0]["content-length"]) == len(data)
    assert upstream.observed.requests[0] == json.loads(body)


def test_the_bounds_and_the_failures(upstream: H2Upstream) -> None:
    upstream.faults.declared_length = (64 << 20) + 1

    async def scenario() -> None:
        http2 = client(upstream)
        try:
            with pytest.raises(ProtocolError, match="exceeds 67108864 bytes"):
                await http2.post(PATH, content=CALL.encode())
            upstream.faults.declared_length = None
            upstream.faults.status = 429
            limited = await http2.post(PATH, content=CALL.encode())
            assert limited.status_code == 429
            assert b"says 429" in limited.content
            assert http2.pool().open == 1  # the same connection all along
        finally:
            await http2.aclose()
        with pytest.raises(ConnectError):
            await Http2Client(refused_url(), {}, max_connections=1, connect_timeout=2).post(
                PATH, content=b"{}"
            )
        with loopback_socket() as silent:  # accepts, never says SETTINGS
            silent.listen()
            mute = f"http://127.0.0.1:{silent.getsockname()[1]}"
            began = time.perf_counter()
            with pytest.raises(TimeoutError, match=r"no connection within 0\.3 s"):
                await Http2Client(mute, {}, max_connections=1, connect_timeout=0.3).post(
                    PATH, content=b"{}"
                )
            assert time.perf_counter() - began < 1

    run(scenario)


# --- over TLS: ALPN


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    cert, key = folder / "cert.pem", folder / "key.pem"
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    return ca, cert, key


def test_auto_speaks_http2_where_alpn_chooses_it_else_http11(
    authority: tuple[trustme.CA, Path, Path],
) -> None:
    ca, cert, key = authority

    def trusting() -> ssl.SSLContext:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        return context

    async def ask(url: str) -> tuple[str, str]:
        negotiated = NegotiatedClient(
            url, {}, max_connections=4, connect_timeout=2, ssl_context=trusting
        )
        try:
            assert negotiated.pool().protocol == UNDECIDED
            first, second = await asyncio.gather(
                negotiated.post(PATH, content=CALL.encode()),
                negotiated.post(PATH, content=CALL.encode()),
            )
            assert first.status_code == second.status_code == 200
            return negotiated.pool().protocol, first.content.decode()
        finally:
            await negotiated.aclose()

    with h2_upstream("tls-h2", tls=(str(cert), str(key))) as speaks_h2:
        protocol, content = asyncio.run(ask(speaks_h2.url))
        assert protocol == "HTTP/2"
        assert "Hello from tls-h2" in content
        assert speaks_h2.observed.connections == 1  # the handshake that decided, kept
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # as serve runs it
            assert runner.run(ask(speaks_h2.url))[0] == "HTTP/2"
    with openai_upstream("tls-h1", tls=(str(cert), str(key))) as speaks_h1:
        protocol, content = asyncio.run(ask(speaks_h1.url))
        assert protocol == "HTTP/1.1"
        assert "Hello from tls-h1" in content

        async def always() -> None:
            http2 = Http2Client(
                speaks_h1.url, {}, max_connections=1, connect_timeout=2, ssl_context=trusting()
            )
            with pytest.raises(ConnectError, match="does not speak HTTP/2"):
                await http2.post(PATH, content=CALL.encode())

        asyncio.run(always())


def test_a_refused_connection_leaves_auto_undecided() -> None:
    async def scenario() -> None:
        url = refused_url().replace("http://", "https://")
        negotiated = NegotiatedClient(url, {}, max_connections=1, connect_timeout=2)
        with pytest.raises(ConnectError):
            await negotiated.post(PATH, content=b"{}")
        assert negotiated.pool().protocol == UNDECIDED
        await negotiated.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("url", "http2", "chosen"),
    [
        ("https://api.example.com/v1", "auto", NegotiatedClient),
        ("http://127.0.0.1:9/v1", "auto", FastClient),
        ("https://api.example.com/v1", "always", Http2Client),
        ("http://127.0.0.1:9/v1", "always", Http2Client),
        ("https://api.example.com/v1", "never", FastClient),
    ],
)
def test_the_client_follows_http2(url: str, http2: str, chosen: type) -> None:
    config = RemoteProviderConfig(kind="openai", base_url=url, http2=http2)
    assert isinstance(make_client(config, {}), chosen)


def test_http2_takes_three_values() -> None:
    entry = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "http2": "yes"}
    with pytest.raises(ConfigError, match="http2"):
        config_from_dict({"providers": {"up": entry}}, "x.yaml")


def test_httpx_speaks_http2_when_asked(upstream: H2Upstream) -> None:
    async def scenario() -> None:
        httpx_client = HttpxClient(
            upstream.url, {}, max_connections=2, connect_timeout=2, http2="always"
        )
        try:
            reply = await httpx_client.post(PATH, content=CALL.encode())
            assert b"Hello from h2" in reply.content
            assert httpx_client.pool().protocol == "HTTP/2"
        finally:
            await httpx_client.aclose()

    run(scenario)
    assert upstream.observed.connections == 1
