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

from interference.providers.transport import ConnectError, ProtocolError, UpstreamClient

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
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
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
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
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
