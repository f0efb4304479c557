"""The gateway benchmark's own parts: the fake upstream (bench/fake_upstream.py) and the load
generator (bench/loadgen.py), driven against each other in-process, and the fake upstream's
wire format checked with the OpenAI spec and the ``openai`` client."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from interference.upstream.http2 import Http2Client
from tests.support.spec import validate

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import fake_upstream
import loadgen

HOST = "127.0.0.1"
CHUNKS = 7
CONTENT = "".join(fake_upstream.WORDS[i % len(fake_upstream.WORDS)] for i in range(CHUNKS))


@pytest.fixture(scope="module")
def upstream() -> Iterator[fake_upstream.Upstream]:
    with fake_upstream.upstream_in_thread(chunks=CHUNKS) as running:
        yield running


def sse_events(body: bytes) -> list[Any]:
    """The data of each event of a stream: parsed JSON, or the string ``[DONE]``."""
    events: list[Any] = []
    for block in body.decode().split("\n\n"):
        if block.strip():
            data = block.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def assert_percentiles_ordered(result: loadgen.LoadResult, stream: bool) -> None:
    assert result.latency_p50_ms <= result.latency_p95_ms <= result.latency_p99_ms
    if stream:
        assert result.ttft_p50_ms <= result.ttft_p95_ms <= result.ttft_p99_ms
        assert result.ttft_p50_ms <= result.latency_p50_ms


def test_non_stream_answers_are_counted_and_valid(upstream: fake_upstream.Upstream) -> None:
    request = loadgen.chat_request(HOST, upstream.port, "bench-model", stream=False)
    result = loadgen.run(
        HOST, upstream.port, request, total=300, concurrency=8, stream=False, keep_bodies=True
    )

    assert (result.requests, result.errors, result.timed_out) == (300, 0, False)
    assert result.rps > 0
    assert_percentiles_ordered(result, stream=False)
    bodies = [json.loads(sample.body or b"") for sample in result.samples]
    assert {body["object"] for body in bodies} == {"chat.completion"}
    assert {body["choices"][0]["message"]["content"] for body in bodies} == {CONTENT}
    validate(bodies[0], "CreateChatCompletionResponse")


def test_streams_are_counted_timed_and_valid(upstream: fake_upstream.Upstream) -> None:
    request = loadgen.chat_request(HOST, upstream.port, "bench-model", stream=True)
    result = loadgen.run(
        HOST,
        upstream.port,
        request,
        total=100,
        concurrency=4,
        stream=True,
        keep_bodies=True,
        keep_events=True,
    )

    assert (result.requests, result.errors, result.timed_out) == (100, 0, False)
    assert_percentiles_ordered(result, stream=True)
    for sample in result.samples:
        events = sse_events(sample.body or b"")
        assert events[-1] == "[DONE]"
        chunks = events[:-1]
        assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        contents = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
        assert len(contents) == CHUNKS
        assert "".join(contents) == CONTENT
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["completion_tokens"] == CHUNKS
        assert len(sample.events) == len(sample.event_data) == len(events)
        assert sample.events == sorted(sample.events)
        assert sample.ttft == sample.events[0] <= sample.latency
    for chunk in sse_events(result.samples[0].body or b"")[:-1]:
        validate(chunk, "CreateChatCompletionStreamResponse")


def test_bad_answers_are_errors(upstream: fake_upstream.Upstream) -> None:
    request = loadgen.post_request(HOST, upstream.port, "/v1/nowhere", b"{}")
    result = loadgen.run(HOST, upstream.port, request, total=5, concurrency=2, stream=False)

    assert (result.requests, result.errors) == (0, 5)
    assert result.first_error is not None
    assert result.first_error.startswith("ResponseError: status 404")


def test_delayed_stream_and_time_bound() -> None:
    with fake_upstream.upstream_in_thread(chunks=2, delay_ms=20) as slow:
        request = loadgen.chat_request(HOST, slow.port, "bench-model", stream=True)
        result = loadgen.run(
            HOST, slow.port, request, total=1000, concurrency=1, stream=True, time_limit_s=0.3
        )

    assert result.timed_out
    assert 1 <= result.requests <= 4
    assert result.errors == 0
    gaps = [b - a for a, b in itertools.pairwise(result.samples[0].events)]
    assert len(gaps) == 2 + 3  # role, 2 contents, finish, usage, [DONE]
    assert min(gaps) >= 0.015


def test_openai_client_reads_the_fake_upstream(upstream: fake_upstream.Upstream) -> None:
    client = OpenAI(base_url=f"{upstream.url}/v1", api_key="x", max_retries=0, timeout=5)
    messages: Any = [{"role": "user", "content": "hi"}]

    completion = client.chat.completions.create(model="bench-model", messages=messages)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == CONTENT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == CHUNKS

    stream = client.chat.completions.create(model="bench-model", messages=messages, stream=True)
    chunks = list(stream)
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == CONTENT
    assert chunks[-1].usage is not None
    assert [model.id for model in client.models.list()] == ["bench-model"]
    client.close()


def test_the_fake_upstream_speaks_http2_with_prior_knowledge_too() -> None:
    """``--http2``: the same answers over h2c, read by the gateway's HTTP/2 client; HTTP/1.1
    connections on the same port go on as before."""
    stream = b'{"model": "bench-model", "stream": true, "messages": []}'

    async def scenario(url: str) -> tuple[list[Any], dict[str, Any], int]:
        http2 = Http2Client(url, {}, max_connections=4, connect_timeout=2, pool_timeout=2)
        try:

            async def streamed() -> bytes:
                async with http2.stream("POST", "/v1/chat/completions", content=stream) as r:
                    assert r.status_code == 200
                    assert r.headers["content-type"] == "text/event-stream"
                    return b"".join([block async for block in r.iter_blocks()])

            bodies = await asyncio.gather(*(streamed() for _ in range(7)))
            reply = await http2.post("/v1/chat/completions", content=b'{"model": "m"}')
            assert reply.status_code == 200
            return sse_events(bodies[0]), json.loads(reply.content), http2.pool().open
        finally:
            await http2.aclose()

    with fake_upstream.upstream_in_thread(chunks=CHUNKS, delay_ms=5, http2_streams=3) as up:
        events, completion, connections = asyncio.run(asyncio.wait_for(scenario(up.url), 20))
        assert events[-1] == "[DONE]"
        assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[1:-3]) == (
            CONTENT
        )
        assert completion["choices"][0]["message"]["content"] == CONTENT
        assert connections == 3  # seven streams, three a connection
        assert (up.stats.streams, up.stats.completions, up.stats.http2_connections) == (7, 1, 3)
        plain = OpenAI(base_url=f"{up.url}/v1", api_key="none", max_retries=0)
        answer = plain.chat.completions.create(model="bench-model", messages=[])
        assert answer.choices[0].message.content == CONTENT
