"""The upstream HTTP/1.1 client against scripted servers on 127.0.0.1, under asyncio and uvloop."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop

from interference.upstream import client as upstream_client
from interference.upstream import fast, sse
from interference.upstream.client import ConnectError, ProtocolError
from interference.upstream.fast import FastClient as UpstreamClient
from interference.upstream.sse import sse_batches

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Script"], Awaitable[None]]


@dataclass
class Script:
    """A server that runs ``handler`` per connection and records what it received."""

    handler: Handler
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    eofs: int = 0
    open_now: int = 0
    most_open: int = 0


async def read_request(reader: asyncio.StreamReader, script: Script) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        script.eofs += 1
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    request = head + await reader.readexactly(length)
    script.requests.append(request)
    return request


CHUNKED = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"  # the head of a chunked 200


def ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n" % len(body)
    return head + b"".join(h + b"\r\n" for h in extra) + b"\r\n" + body


async def serve(script: Script, ssl_context: ssl.SSLContext | None = None) -> asyncio.Server:
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script.connections += 1
        script.open_now += 1
        script.most_open = max(script.most_open, script.open_now)
        try:
            await script.handler(reader, writer, script)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            script.open_now -= 1
            writer.close()

    return await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=ssl_context)


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Script) -> None:
    while (request := await read_request(reader, s)) is not None:
        writer.write(ok(b'{"n": %d}' % len(s.requests)))
        await writer.drain()
        assert request


LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Callable[[], Awaitable[Any]]], Any]:
    def runner(main: Callable[[], Awaitable[Any]]) -> Any:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as loop:
            return loop.run(asyncio.wait_for(main(), 10))

    return runner


def client_for(server: asyncio.Server, **options: Any) -> UpstreamClient:
    settings: dict[str, Any] = {"max_connections": 8, "connect_timeout": 2, **options}
    base = settings.pop("base", None) or f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    return UpstreamClient(base, {"authorization": "Bearer k"}, **settings)


def test_requests_reuse_one_connection_and_carry_their_headers(run: Any) -> None:
    script = Script(keep_alive)

    async def main() -> list[bytes]:
        server = await serve(script)
        client = client_for(server)
        bodies = []
        for _ in range(3):
            response = await client.post(
                "/chat", content=b"{}", headers={"X-Extra": "1"}, params={"q": "a b"}
            )
            assert response.status_code == 200
            assert response.headers["content-length"] == "8"
            bodies.append(response.content)
        await client.aclose()
        server.close()
        return bodies

    assert run(main) == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    assert script.connections == 1
    head = script.requests[0].split(b"\r\n")
    assert head[0] == b"POST /v1/chat?q=a+b HTTP/1.1"
    assert b"authorization: Bearer k" in head
    assert b"x-extra: 1" in head
    assert b"accept-encoding: identity" in head
    assert b"content-length: 2" in head
    assert script.requests[0].endswith(b"\r\n\r\n{}")


def test_a_chunked_stream_is_handed_over_as_it_arrives(run: Any) -> None:
    gate = asyncio.Event()

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Script
    ) -> None:
        await read_request(reader, s)
        writer.write(CHUNKED + b"5\r\nfirst\r\n")
        await writer.drain()
        await gate.wait()  # the second piece only once the client has the first
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()
        await read_request(reader, s)  # stays open for another request

    script = Script(handler)

    async def main() -> list[bytes]:
        server = await serve(script)
        client = client_for(server)
        blocks = []
        async with client.stream("POST", "/s", content=b"{}") as response:
            async for block in response.iter_blocks():
                blocks.append(block)
                gate.set()
        assert len(client._idle) == 1  # read to its end: back in the pool
        await client.aclose()
        server.close()
        return blocks

    assert run(main) == [b"first", b"second"]


def test_leaving_a_stream_early_closes_its_connection(run: Any) -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Script
    ) -> None:
        await read_request(reader, s)
        writer.write(CHUNKED + b"3\r\nabc\r\n")
        await writer.drain()
        await read_request(reader, s)  # records the EOF when the client hangs up

    script = Script(handler)

    async def main() -> None:
        server = await serve(script)
        client = client_for(server)
        async with client.stream("POST", "/s", content=b"") as response:
            async for _ in response.iter_blocks():
                break
        for _ in range(50):
            if script.eofs:
                break
            await asyncio.sleep(0.01)
        assert client._idle == []
        server.close()

    run(main)
    assert script.eofs == 1


def test_a_connection_paused_with_its_body_unread_reads_again_when_reused(run: Any) -> None:
    big = b"x" * ((1 << 20) + 1)  # only its last byte crosses the unread-bytes bound

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Script
    ) -> None:
        await read_request(reader, s)
        writer.write(ok(big))
        await read_request(reader, s)
        writer.write(ok(b"small"))
        await writer.drain()
        await read_request(reader, s)

    script = Script(handler)

    async def main() -> bytes:
        server = await serve(script)
        client = client_for(server)
        async with client.stream("POST", "/big", content=b"") as response:
            for _ in range(300):  # until it has all arrived, none of it read
                if response._connection.complete:
                    break
                await asyncio.sleep(0.01)
            assert response._connection.complete
            assert response._connection._paused
        second = (await client.post("/small", content=b"")).content
        await client.aclose()
        server.close()
        return second

    assert run(main) == b"small"
    assert script.connections == 1


def test_an_idle_connection_the_upstream_closed_is_not_used_again(run: Any) -> None:
    async def one_answer(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Script
    ) -> None:
        await read_request(reader, s)
        writer.write(ok(b"x"))
        await writer.drain()
        # then the server closes the idle connection (a keep-alive timeout)

    script = Script(one_answer)

    async def main() -> list[bytes]:
        server = await serve(script)
        client = client_for(server)
        first = (await client.post("/a", content=b"")).content
        await asyncio.sleep(0.05)
        second = (await client.post("/a", content=b"")).content
        await client.aclose()
        server.close()
        return [first, second]

    assert run(main) == [b"x", b"x"]
    assert script.connections == 2


def test_a_connection_close_answer_is_not_reused_and_a_body_may_end_at_eof(run: Any) -> None:
    async def closing(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Script
    ) -> None:
        await read_request(reader, s)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
        await writer.drain()

    script = Script(closing)

    async def main() -> list[bytes]:
        server = await serve(script)
        client = client_for(server)
        bodies = [(await client.post("/a", content=b"")).content for _ in range(2)]
        server.close()
        return bodies

    assert run(main) == [b"until the end"] * 2
    assert script.connections == 2


def test_failures_are_typed(run: Any) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Script) -> None:
        await read_request(reader, s)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()
        writer.transport.abort()

    async def garbage(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Script
    ) -> None:
        await read_request(reader, s)
        writer.write(b"this is not HTTP\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async def main() -> None:
        server = await serve(Script(cut))
        with pytest.raises(ConnectionResetError):
            await client_for(server).post("/a", content=b"")
        server.close()
        server = await serve(Script(garbage))
        with pytest.raises(ProtocolError, match="invalid HTTP"):
            await client_for(server).post("/a", content=b"")
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectError):
            await client_for(server, base=f"http://127.0.0.1:{port}").post("/a", content=b"")
        with pytest.raises(ValueError, match="line break"):
            await client_for(server, base=f"http://127.0.0.1:{port}").post(
                "/a", content=b"", headers={"x": "a\r\nevil: 1"}
            )

    run(main)


def test_max_connections_bounds_concurrent_requests(run: Any) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Script) -> None:
        while await read_request(reader, s) is not None:
            await asyncio.sleep(0.02)
            writer.write(ok(b"ok"))
            await writer.drain()

    script = Script(slow)

    async def main() -> None:
        server = await serve(script)
        client = client_for(server, max_connections=2)
        answers = await asyncio.gather(*(client.post("/a", content=b"") for _ in range(6)))
        assert [a.content for a in answers] == [b"ok"] * 6
        await client.aclose()
        server.close()

    run(main)
    assert script.most_open == 2
    assert len(script.requests) == 6


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https(run: Any, tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    script = Script(keep_alive)

    async def main() -> None:
        server = await serve(script, server_side)
        port = server.sockets[0].getsockname()[1]
        trusted = ssl.create_default_context(cafile=str(cert))
        client = client_for(server, base=f"https://127.0.0.1:{port}", ssl_context=trusted)
        assert (await client.post("/a", content=b"")).content == b'{"n": 1}'
        await client.aclose()
        untrusted = client_for(server, base=f"https://127.0.0.1:{port}")  # system CAs only
        with pytest.raises(ConnectError):
            await untrusted.post("/a", content=b"")
        server.close()

    run(main)


async def wait_for(condition: Callable[[], bool], seconds: float = 2.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)


def target(request: bytes) -> bytes:
    return request.split(b" ")[1].removeprefix(b"/v1")


def routed(
    answer: Callable[[bytes, asyncio.StreamWriter], Awaitable[None]],
) -> tuple[Script, list[str]]:
    """A server that answers each request with ``answer(path, writer)``, and the list in which it
    records, as each connection ends, the path of that connection's last request."""
    closed: list[str] = []

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Script
    ) -> None:
        path = b""
        try:
            while (request := await read_request(reader, s)) is not None:
                path = target(request)
                await answer(path, writer)
        except ConnectionError:
            pass
        closed.append(path.decode())

    return Script(handler), closed


async def each_fails(client: UpstreamClient, paths: tuple[str, ...], match: str) -> None:
    """A POST to each of ``paths`` raises a ``ProtocolError`` matching ``match``."""
    for path in paths:
        with pytest.raises(ProtocolError, match=match):
            await client.post(path, content=b"")


def test_a_body_read_whole_over_the_limit_fails_and_closes_the_connection(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstream_client, "MAX_BODY", 1000)

    async def answer(path: bytes, writer: asyncio.StreamWriter) -> None:
        if path == b"/fits":  # exactly the limit
            writer.write(ok(b"x" * 1000))
        elif path == b"/declared":  # says so in its content-length: fails before reading
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1001\r\n\r\n")
        else:  # a chunked body that never ends
            status = b"500 Oops" if path == b"/error" else b"200 OK"
            writer.write(b"HTTP/1.1 %s\r\ntransfer-encoding: chunked\r\n\r\n" % status)
            while True:
                writer.write(b"100\r\n" + b"x" * 256 + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0)

    script, closed = routed(answer)  # closed: each connection's last request, as it closed

    async def main() -> None:
        server = await serve(script)
        client = client_for(server)
        await each_fails(client, ("/declared", "/endless"), "answer exceeds 1000 bytes")
        async with client.stream("POST", "/error", content=b"") as response:
            assert response.status_code == 500
            with pytest.raises(ProtocolError, match="answer exceeds 1000 bytes"):
                await response.aread()  # an error's body (check_status) is bounded too
        assert client._open == set()
        assert len((await client.post("/fits", content=b"")).content) == 1000
        assert len(client._idle) == 1  # read to its end: back in the pool
        await wait_for(lambda: len(closed) == 3)
        assert sorted(closed) == ["/declared", "/endless", "/error"]
        await client.aclose()
        await wait_for(lambda: len(closed) == 4)
        server.close()

    run(main)
    assert script.connections == 4  # no connection that failed was reused


def test_a_response_head_over_the_limit_fails_and_closes_the_connection(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fast, "_MAX_HEAD", 1024)
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n"  # a 19-byte header line
    header = b"x-h: " + b"v" * 90 + b"\r\n"  # 100 bytes on the wire (and as counted)

    async def answer(path: bytes, writer: asyncio.StreamWriter) -> None:
        if path == b"/fits":  # 1019 bytes of header lines
            writer.write(head + header * 10 + b"\r\nok")
        elif path == b"/many":  # all in one write: the head is complete, but 1119 bytes
            writer.write(head + header * 11 + b"\r\nok")
        else:  # a header line that never ends
            writer.write(b"HTTP/1.1 200 OK\r\nx-endless: ")
            while True:
                writer.write(b"v" * 100)
                await writer.drain()
                await asyncio.sleep(0.001)

    script, closed = routed(answer)

    async def main() -> None:
        server = await serve(script)
        client = client_for(server)
        await each_fails(client, ("/many", "/endless"), "response head exceeds 1024 bytes")
        assert client._open == set()
        for _ in range(2):
            assert (await client.post("/fits", content=b"")).content == b"ok"
        assert len(client._idle) == 1
        await wait_for(lambda: len(closed) == 2)
        assert sorted(closed) == ["/endless", "/many"]
        await client.aclose()
        server.close()

    run(main)
    assert script.connections == 3


def test_a_request_cancelled_before_the_answer_closes_its_connection(run: Any) -> None:
    hung_up = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Script) -> None:
        await read_request(reader, s)
        await read_request(reader, s)  # nothing sent: returns at the client's EOF
        hung_up.set()

    script = Script(silent)

    async def main() -> None:
        server = await serve(script)
        client = client_for(server, max_connections=1)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):  # a router's first-token timeout
                await client.post("/a", content=b"")
        async with asyncio.timeout(2):
            await hung_up.wait()
        assert client._open == set()
        assert client._idle == []
        with pytest.raises(TimeoutError):  # its pool slot was given back
            async with asyncio.timeout(0.1):
                await client.post("/a", content=b"")
        server.close()

    run(main)
    assert script.eofs == 2


def test_an_sse_event_over_the_limit_fails_the_stream_and_closes_the_connection(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "MAX_EVENT", 1000)
    hung_up = asyncio.Event()

    async def no_blank_line(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Script
    ) -> None:
        await read_request(reader, s)
        writer.write(CHUNKED)
        writer.write(b'10\r\ndata: {"a": 1}\n\n\r\n')
        try:
            while True:
                writer.write(b"64\r\n" + b"data: " + b"x" * 93 + b"\n\r\n")  # lines, no blank one
                await writer.drain()
                await asyncio.sleep(0.001)
        except ConnectionError:
            hung_up.set()

    async def main() -> list[list[bytes]]:
        server = await serve(Script(no_blank_line))
        client = client_for(server)
        batches: list[list[bytes]] = []

        async def read() -> None:
            async with client.stream("POST", "/s", content=b"") as response:
                async for events in sse_batches(response):
                    batches.append(events)

        with pytest.raises(ProtocolError, match="SSE event of the upstream exceeds 1000 bytes"):
            await read()
        async with asyncio.timeout(2):
            await hung_up.wait()
        assert client._open == set()
        server.close()
        return batches

    assert run(main) == [[b'{"a": 1}']]
