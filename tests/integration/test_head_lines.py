"""A limited key's ``x-ratelimit-*`` headers reach the client through ``interference serve``'s
own path into the response head (``api.guard.HEAD_LINES``, ``server._HeadLines``): once each,
in the head, on keep-alive and pipelined requests and on streams, read off a raw socket."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.openai_fake import openai_upstream
from tests.support.server import ServerProcess, start_server
from tests.support.upstream import FakeUpstream

MASTER = "sk-master-head-lines"
CONFIG = """
server: {{master_key: {master}}}
storage: {{path: "{db}"}}
providers:
  oai: {{kind: openai, base_url: "{url}/v1"}}
models:
  m:
    deployments: [{{provider: oai, model: upstream-model}}]
openai_aliases: false
"""
LIMIT_NAMES = [
    f"x-ratelimit-{kind}-{unit}"
    for unit in ("requests", "tokens")
    for kind in ("limit", "remaining", "reset")
]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    upstream: FakeUpstream = openai_upstream("oai").start()
    config = CONFIG.format(master=MASTER, db=tmp_path / "k.db", url=upstream.url)
    server = start_server(tmp_path, config)
    try:
        made = httpx.post(
            f"{server.url}/key/generate",
            json={"rpm_limit": 50, "tpm_limit": 100_000},
            headers={"authorization": f"Bearer {MASTER}"},
            timeout=10,
        )
        yield server, made.json()["key"]
    finally:
        server.stop()
        upstream.stop()


def request(key: str, stream: bool = False) -> bytes:
    body = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": stream}
    ).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer %s\r\ncontent-length: %d\r\n\r\n%s"
    ) % (key.encode(), len(body), body)


def read_answers(sock: socket.socket, count: int) -> list[tuple[list[tuple[str, str]], bytes]]:
    """``count`` answers with a content-length: (headers in order, body)."""
    data, answers = b"", []
    deadline = time.monotonic() + 10
    while len(answers) < count:
        assert time.monotonic() < deadline, f"only {len(answers)} answers: {data!r}"
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            lines = data[:head_end].decode("latin-1").split("\r\n")
            assert lines[0].startswith("HTTP/1.1 200"), lines[0]
            headers = [(n.lower(), v) for n, _, v in (line.partition(": ") for line in lines[1:])]
            size = int(dict(headers)["content-length"])
            if len(data) >= head_end + 4 + size:
                answers.append((headers, data[head_end + 4 : head_end + 4 + size]))
                data = data[head_end + 4 + size :]
                continue
        data += sock.recv(65536)
    return answers


def limit_values(headers: list[tuple[str, str]]) -> dict[str, str]:
    found = [(n, v) for n, v in headers if n.startswith("x-ratelimit-")]
    assert sorted(n for n, _ in found) == sorted(LIMIT_NAMES)  # each once
    return dict(found)


def test_keep_alive_and_pipelined_answers_carry_the_lines_once(
    served: tuple[ServerProcess, str],
) -> None:
    server, key = served
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request(key))
        [(first, body)] = read_answers(sock, 1)
        assert json.loads(body)["object"] == "chat.completion"
        assert limit_values(first)["x-ratelimit-remaining-requests"] == "49"
        sock.sendall(request(key) + request(key))  # two at once on the connection
        answers = read_answers(sock, 2)
    remaining = [limit_values(headers)["x-ratelimit-remaining-requests"] for headers, _ in answers]
    assert sorted(remaining) == ["47", "48"]
    for headers, body in answers:
        assert json.loads(body)["choices"][0]["message"]["role"] == "assistant"
        assert limit_values(headers)["x-ratelimit-limit-tokens"] == "100000"


def test_a_stream_carries_the_lines_and_its_events(served: tuple[ServerProcess, str]) -> None:
    server, key = served
    with httpx.stream(
        "POST",
        f"{server.url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": True},
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    ) as answer:
        text = answer.read().decode()
        headers = list(answer.headers.multi_items())
    assert limit_values(headers)["x-ratelimit-limit-requests"] == "50"
    assert text.rstrip().endswith("data: [DONE]")
