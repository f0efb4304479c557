"""The embedded engine's features through the API: batching, queue bound, JSON, logprobs, cache."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from tests.support.server import ServerProcess, start_server
from tests.support.spec import validate

pytestmark = pytest.mark.e2e

NO_EOS = {"2": -100}


def stream_timeline(url: str, body: dict[str, Any]) -> tuple[list[float], dict[str, Any]]:
    """Arrival times of content chunks, and the final finish/usage information."""
    arrivals: list[float] = []
    last: dict[str, Any] = {}
    payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=payload, timeout=120) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                arrivals.append(time.perf_counter())
            if chunk["choices"] and chunk["choices"][0]["finish_reason"]:
                last["finish_reason"] = chunk["choices"][0]["finish_reason"]
            if chunk.get("usage"):
                last["usage"] = chunk["usage"]
    return arrivals, last


def test_eight_concurrent_streams_complete_interleaved(server: ServerProcess) -> None:
    results: dict[int, tuple[list[float], dict[str, Any]]] = {}

    def run(i: int) -> None:
        body = {
            "model": "gpt-4",
            "messages": [{"role": "user", "content": f"Tell story number {i}."}],
            "max_tokens": 24,
            "logit_bias": NO_EOS,
        }
        results[i] = stream_timeline(server.url, body)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(results) == list(range(8))
    for arrivals, last in results.values():
        assert last["finish_reason"] == "length"
        assert last["usage"]["completion_tokens"] == 24  # none cut short
        assert arrivals
    # decoded together: the first four streams' token windows overlap in time
    windows = sorted((a[0], a[-1]) for a, _ in results.values())
    overlapping = sum(1 for (s1, _), (_, e0) in zip(windows[1:], windows, strict=False) if s1 < e0)
    assert overlapping >= 3


@pytest.fixture(scope="module")
def tiny_queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = "providers:\n  local: {kind: local, parallel: 1, max_queue: 1, context: 2048}\n"
    running = start_server(tmp_path_factory.mktemp("queue"), config)
    yield running
    assert running.stop() == 0


def test_past_the_queue_bound_requests_get_429_with_retry_after(tiny_queue: ServerProcess) -> None:
    long = {
        "model": "gpt-4",
        "messages": [{"role": "user", "content": "Write a long story."}],
        "max_tokens": 300,
        "logit_bias": NO_EOS,
        "stream": True,
    }
    release = threading.Event()

    def hold_open() -> None:  # a streaming client that keeps its request open
        with httpx.stream("POST", f"{tiny_queue.url}/v1/chat/completions", json=long, timeout=60):
            release.wait(30)

    holders = [threading.Thread(target=hold_open) for _ in range(2)]  # one decoding, one queued
    for holder in holders:
        holder.start()
    try:
        time.sleep(1.0)  # both are in: the first decodes, the second waits for the slot
        started = time.perf_counter()
        refused = httpx.post(
            f"{tiny_queue.url}/v1/chat/completions", json={**long, "stream": False}, timeout=60
        )
        assert time.perf_counter() - started < 2  # answered at once, no hang
    finally:
        release.set()
        for holder in holders:
            holder.join(timeout=60)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    body = refused.json()
    validate(body, "ErrorResponse")
    assert body["error"]["code"] == "rate_limit_exceeded"


def test_json_object_mode(http: httpx.Client) -> None:
    body = http.post(
        "/v1/chat/completions",
        json={
            "model": "gpt-4",
            "messages": [{"role": "user", "content": "Give a cat's name and age as JSON."}],
            "response_format": {"type": "json_object"},
            "max_tokens": 400,
            "seed": 5,  # a seed whose answer ends within 400 tokens (the grammar alone allows
            # an endless string: a few seeds run into the cap)
        },
    ).json()
    validate(body, "CreateChatCompletionResponse")
    assert body["choices"][0]["finish_reason"] == "stop"  # the grammar closed the object
    assert isinstance(json.loads(body["choices"][0]["message"]["content"]), dict)


def test_json_schema_output_validates(server: ServerProcess) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "hobbies": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        },
        "required": ["name", "age", "hobbies"],
        "additionalProperties": False,
    }
    completion = server.client().chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema, "strict": True},
        },
        max_tokens=400,
        seed=7,
    )
    assert completion.choices[0].finish_reason == "stop"
    content = completion.choices[0].message.content
    assert content is not None
    jsonschema.validate(json.loads(content), schema)


def test_logprobs_shape(http: httpx.Client) -> None:
    request = {
        "model": "gpt-4",
        "messages": [{"role": "user", "content": "Hi"}],
        "logprobs": True,
        "top_logprobs": 3,
        "max_tokens": 4,
        "logit_bias": NO_EOS,
    }
    body = http.post("/v1/chat/completions", json=request).json()
    validate(body, "CreateChatCompletionResponse")
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == 4
    for item in content:
        assert item["logprob"] <= 0
        assert len(item["top_logprobs"]) == 3
        assert bytes(item["bytes"]).decode("utf-8", "replace")
    assert "".join(i["token"] for i in content) == body["choices"][0]["message"]["content"]
    with http.stream("POST", "/v1/chat/completions", json={**request, "stream": True}) as r:
        chunks = [
            json.loads(line.removeprefix("data: "))
            for line in r.iter_lines()
            if line.startswith("data: {")
        ]
    streamed = [c for c in chunks if c["choices"] and c["choices"][0].get("logprobs")]
    assert len(streamed) == 4
    for chunk in streamed:
        validate(chunk, "CreateChatCompletionStreamResponse")


def test_a_follow_up_turn_reuses_the_cached_prefix(server: ServerProcess) -> None:
    client = server.client()
    history: list[Any] = [
        {"role": "system", "content": "You are a patient teacher. " * 20},
        {"role": "user", "content": "Explain what a noun is."},
    ]
    first = client.chat.completions.create(model="gpt-4", messages=history, max_tokens=20)
    assert first.usage is not None
    history += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "And a verb?"},
    ]
    second = client.chat.completions.create(model="gpt-4", messages=history, max_tokens=5)
    assert second.usage is not None
    details = second.usage.prompt_tokens_details
    assert details is not None
    assert details.cached_tokens is not None
    assert details.cached_tokens >= first.usage.prompt_tokens - 2


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_tool_call_round_trip(server: ServerProcess, stream: bool) -> None:
    client = server.client()
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    options: dict[str, Any] = {
        "model": "gpt-4o",
        "tools": [WEATHER_TOOL],
        "parallel_tool_calls": False,
        "max_tokens": 100,
    }
    if stream:
        calls: dict[int, dict[str, str]] = {}
        finish = None
        for chunk in client.chat.completions.create(
            messages=messages, tool_choice="required", stream=True, **options
        ):
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                slot = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] += delta.id or ""
                if delta.function is not None:
                    slot["name"] += delta.function.name or ""
                    slot["arguments"] += delta.function.arguments or ""
        assert finish == "tool_calls"
        assert len(calls) == 1
        call_id, name, arguments = calls[0]["id"], calls[0]["name"], calls[0]["arguments"]
    else:
        first = client.chat.completions.create(messages=messages, tool_choice="required", **options)
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        assert choice.message.tool_calls is not None
        assert len(choice.message.tool_calls) == 1
        tool_call = choice.message.tool_calls[0]
        call_id = tool_call.id
        name, arguments = tool_call.function.name, tool_call.function.arguments  # type: ignore[union-attr]
    assert name == "get_weather"
    assert isinstance(json.loads(arguments)["city"], str)
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": '{"temp_c": 18, "sky": "cloudy"}'},
    ]
    final = client.chat.completions.create(messages=messages, tool_choice="none", **options)
    assert final.choices[0].message.content
    assert final.choices[0].message.tool_calls is None
    assert final.choices[0].finish_reason in ("stop", "length")
