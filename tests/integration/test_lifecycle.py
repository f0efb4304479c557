"""The server process in front of a fake upstream: shutdown with a grace period, clients that
stop reading, keys kept out of the logs, and JSON log lines."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.openai_fake import openai_upstream
from tests.support.server import ServerProcess, start_server
from tests.support.upstream import FakeUpstream

KEY = "sk-lifecycle-9fQ2xL7w"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with openai_upstream("up", words=40) as running:
        yield running


def config(upstream: FakeUpstream, server: str = "") -> str:
    return (
        f"server: {{{server}}}\n"
        "providers:\n"
        f'  up: {{kind: openai, base_url: "{upstream.url}/v1"}}\n'
        "models:\n"
        "  m: {deployments: [{provider: up, model: upstream-model}]}\n"
        "openai_aliases: false\n"
    )


def open_stream(url: str, model: str = "m") -> socket.socket:
    """A streamed chat request on a raw socket; returns once the answer has begun."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    sock = socket.create_connection((host, int(port)), timeout=20)
    sock.sendall(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
    )
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return data


def request_lines(server: ServerProcess) -> list[dict[str, object]]:
    lines = [
        json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")
    ]
    return [line for line in lines if line["logger"] == "interference.requests"]


def test_sigterm_lets_short_streams_finish_ends_long_ones_and_exits_0(tmp_path: Path) -> None:
    with openai_upstream("short", words=20) as fast, openai_upstream("long", words=40) as slow:
        fast.faults.chunk_delay = 0.05  # 1 s a stream: within the grace period
        slow.faults.chunk_delay = 0.25  # 10 s a stream: beyond it
        yaml = (
            "server: {shutdown_grace_s: 3}\n"
            "providers:\n"
            f'  slow: {{kind: openai, base_url: "{slow.url}/v1"}}\n'
            f'  fast: {{kind: openai, base_url: "{fast.url}/v1"}}\n'
            "models:\n"
            "  m: {deployments: [{provider: slow, model: upstream-model}]}\n"
            "  quick: {deployments: [{provider: fast, model: upstream-model}]}\n"
            "openai_aliases: false\n"
        )
        server = start_server(tmp_path, yaml, "--log-format", "json")
        try:
            long_stream = open_stream(server.url)
            short_stream = open_stream(server.url, model="quick")
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            with pytest.raises(httpx.ConnectError):  # no new connections
                httpx.get(f"{server.url}/health", timeout=2)
            short, long = read_to_end(short_stream), read_to_end(long_stream)
            elapsed = time.monotonic() - started
        finally:
            try:
                code = server.process.wait(timeout=15)
            except subprocess.TimeoutExpired:  # the test broke off before its SIGTERM
                code = server.stop()
        assert code == 0
    end = b"data: [DONE]\n\n\r\n0\r\n\r\n"
    assert b"server_shutting_down" not in short
    assert short.endswith(end)
    assert b'"code":"server_shutting_down"' in long
    assert long.endswith(end)
    assert 2.9 < elapsed < 5
    outcomes = sorted(str(line["outcome"]) for line in request_lines(server))
    assert outcomes == ["ok", "shutdown"]


def test_a_client_that_stops_reading_is_cut_off_and_the_server_stays_well(
    tmp_path: Path,
) -> None:
    with openai_upstream("big", words=30000) as upstream:  # megabytes of events, at once
        server = start_server(
            tmp_path, config(upstream, "limits: {slow_client_s: 1}"), "--log-format", "json"
        )
        try:
            host, port = server.url.removeprefix("http://").split(":")
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((host, int(port)))
            body = json.dumps(
                {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            )
            sock.sendall(
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                f"application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
            )
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not request_lines(server):
                time.sleep(0.2)  # not reading: the server must give up on its own
            (line,) = request_lines(server)
            assert (line["outcome"], line["level"]) == ("slow_client", "warning")
            sock.close()
            health = httpx.get(f"{server.url}/health", timeout=5)
            assert health.json()["status"] == "ok"
        finally:
            assert server.stop() == 0
    log = server.log.read_text()
    assert "ASGI callable returned without completing response" not in log  # logged once


def test_keys_never_appear_in_the_logs_even_at_debug_level(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    wrong = "sk-wrong-Kd83nQ0z"
    server = start_server(
        tmp_path,
        config(upstream, f'api_keys: ["{KEY}"]'),
        "--log-level",
        "debug",
        "--log-format",
        "json",
    )
    try:
        for headers in (
            {"authorization": f"Bearer {KEY}"},
            {"x-api-key": KEY},
            {"authorization": f"Bearer {wrong}"},
            {},
        ):
            for stream in (False, True):
                httpx.post(
                    f"{server.url}/v1/chat/completions",
                    json={
                        "model": "m",
                        "messages": [{"role": "user", "content": "hi"}],
                        "stream": stream,
                    },
                    headers=headers,
                    timeout=10,
                )
        statuses = sorted(int(str(line["status"])) for line in request_lines(server))
        assert statuses == [200] * 4 + [401] * 4
        # the official client sends its api_key as a Bearer token
        hi = [{"role": "user", "content": "hi"}]
        answer = server.client(api_key=KEY).chat.completions.create(model="m", messages=hi)
        assert answer.choices[0].message.content
        with pytest.raises(openai.AuthenticationError) as refused:
            server.client(api_key=wrong).chat.completions.create(model="m", messages=hi)
        assert refused.value.code == "invalid_api_key"
    finally:
        assert server.stop() == 0
    log = server.log.read_text()
    assert KEY not in log
    assert wrong not in log
    assert KEY[3:12] not in log
    assert "hi" not in [line.get("message") for line in request_lines(server)]


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_thousands_of_abandoned_connections_are_closed_and_the_server_stays_well(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Connections that send nothing, half a head, a head without its body, or a whole request
    whose answer they never read: each is closed by the server within its bounds."""
    count = 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 1000)), hard))
    server = start_server(
        tmp_path,
        config(
            upstream,
            "limits: {head_timeout_s: 3, body_timeout_s: 3, max_concurrent_per_client: 1000}",
        ),
        "--log-format",
        "json",
    )
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sends = [b"", b"POST /v1/chat/comp", head.encode(), (head + body).encode()]
    pid = server.process.pid
    sockets: list[socket.socket] = []
    try:
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
        baseline = open_fds(pid)
        for i in range(count):
            sock = socket.create_connection((host, int(port)), timeout=10)
            if sends[i % 4]:
                sock.sendall(sends[i % 4])
            sockets.append(sock)
        peak, deadline = 0, time.monotonic() + 3
        while time.monotonic() < deadline and peak < baseline + count * 3 // 4:
            peak = max(peak, open_fds(pid))
            time.sleep(0.05)
        assert peak >= baseline + count * 3 // 4  # the server holds them now
        health = httpx.get(f"{server.url}/health", timeout=5)  # and still answers
        assert health.json()["status"] == "ok"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and open_fds(pid) > baseline + 5:
            time.sleep(0.2)
        assert open_fds(pid) <= baseline + 5  # closed by the server, not by us
        for sock in sockets[:8]:  # what the client of each kind saw: EOF
            sock.settimeout(5)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            assert not data or data.startswith(b"HTTP/1.1 ")
        answer = server.client().chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content
    finally:
        for sock in sockets:
            sock.close()
        assert server.stop() == 0
    statuses = Counter(int(str(line["status"])) for line in request_lines(server))
    assert statuses[200] >= count // 4  # the whole requests were answered
    assert statuses[408] == count // 4  # the heads without a body
    assert not [s for s in statuses if s >= 500]
