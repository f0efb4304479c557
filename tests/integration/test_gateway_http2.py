"""``interference serve`` in front of a real HTTP/2 upstream (``http2: always``, h2c): the official
``openai`` client's streamed and plain chats, the protocol in ``/v1/providers``, and a full
stream pool answered with a 503 ``upstream_busy`` as over HTTP/1.1 (issue 18)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.support.h2_upstream import h2_upstream
from tests.support.server import start_server


def test_the_gateway_speaks_http2_to_an_upstream_configured_so(tmp_path: Path) -> None:
    with h2_upstream("h2") as upstream:
        upstream.faults.max_concurrent_streams = 1  # one stream at a time on its connection
        config = f"""
providers:
  up: {{kind: openai, base_url: "{upstream.url}/v1", http2: always, max_connections: 1,
        pool_timeout: 0.3, api_key: sk-test}}
models:
  chat: {{deployments: [{{provider: up, model: upstream-model}}]}}
openai_aliases: false
"""
        server = start_server(tmp_path, config)
        try:
            openai = server.client(timeout=20)
            stream = openai.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices]
            text = "".join(piece or "" for piece in pieces)
            assert text == "Hello from h2 w0 w1 w2"
            reply = openai.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.choices[0].message.content == "Hello from h2 w0 w1 w2"
            head = upstream.observed.headers[0]
            assert head[":path"] == "/v1/chat/completions"
            assert head["authorization"] == "Bearer sk-test"

            upstream.faults.chunk_delay = 0.3  # a stream that holds the one slot for a while
            chat = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
            with (
                httpx.Client(base_url=server.url, timeout=20) as http,
                http.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as held,
            ):
                assert held.status_code == 200
                events = held.iter_bytes()  # referenced: a dropped iterator closes the stream
                next(events)
                began = time.perf_counter()
                busy = http.post("/v1/chat/completions", json=chat)
                assert time.perf_counter() - began >= 0.3
                assert busy.status_code == 503, busy.text
                assert busy.json()["error"]["code"] == "upstream_busy"
                providers = {p["name"]: p for p in http.get("/v1/providers").json()["providers"]}
                pool = providers["up"]["connections"]
                assert pool["protocol"] == "HTTP/2"
                assert (pool["open"], pool["in_use"], pool["refused"]) == (1, 1, 1)
        finally:
            server.stop()
        assert upstream.observed.connections == 1
