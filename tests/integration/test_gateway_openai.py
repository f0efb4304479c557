"""The gateway in front of real HTTP fake OpenAI-compatible upstreams on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from interference.api.app import create_app
from interference.config import RemoteProviderConfig, config_from_dict
from interference.providers.openai import OpenAIProvider
from interference.wire.chat import ChatCompletionRequest
from tests.support.openai_fake import openai_upstream
from tests.support.spec import validate
from tests.support.upstream import FakeUpstream, refused_url

HI = [{"role": "user", "content": "hi"}]
TIMEOUTS = {"connect": 1, "first_token": 1, "idle": 1, "total": 3}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[list[FakeUpstream]]:
    started = [openai_upstream(f"up{i}").start() for i in range(2)]
    yield started
    for upstream in started:
        upstream.stop()


@pytest.fixture(autouse=True)
def _clean(upstreams: list[FakeUpstream]) -> None:
    for upstream in upstreams:
        upstream.reset()


def gateway_config(urls: list[str], **routing: Any) -> dict[str, Any]:
    return {
        "providers": {
            f"up{i}": {
                "kind": "openai",
                "base_url": f"{url}/v1",
                "api_key": f"key-{i}",
                "timeouts": TIMEOUTS,
            }
            for i, url in enumerate(urls)
        },
        "models": {
            "gpt-x": {
                "deployments": [
                    {"provider": f"up{i}", "model": "upstream-model"} for i in range(len(urls))
                ]
            }
        },
        "routing": {"strategy": "ordered", **routing},
    }


def client_for(config: dict[str, Any]) -> TestClient:
    return TestClient(create_app(config_from_dict(config)), raise_server_exceptions=False)


def stream_events(client: TestClient, body: dict[str, Any]) -> tuple[Any, list[Any]]:
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        raw = response.read().decode()
    if response.status_code != 200:
        return response, [json.loads(raw)]
    events = [e.removeprefix("data: ") for e in raw.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    return response, [json.loads(e) for e in events[:-1]]


def text_of(events: list[Any]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in events if c.get("choices")
    )


def test_non_stream_pass_through(upstreams: list[FakeUpstream]) -> None:
    with client_for(gateway_config([u.url for u in upstreams])) as client:
        response = client.post(
            "/v1/chat/completions",
            json={"model": "gpt-x", "messages": HI, "reasoning_effort": "low", "temperature": 0.2},
        )
    assert response.status_code == 200
    body = response.json()
    validate(body, "CreateChatCompletionResponse")
    assert body["model"] == "gpt-x"
    assert body["id"].startswith("chatcmpl-")
    assert body["id"] != "chatcmpl-up0"
    assert body["choices"][0]["message"]["content"] == "Hello from up0 w0 w1 w2 w3"
    assert body["service_tier"] == "default"  # upstream fields we do not model pass through
    assert response.headers["x-interference-deployment"] == "up0/upstream-model"
    assert response.headers["x-interference-attempts"] == "1"
    sent = upstreams[0].observed.requests[0]
    assert sent["model"] == "upstream-model"
    assert sent["reasoning_effort"] == "low"
    assert sent["temperature"] == 0.2
    assert "provider" not in sent
    assert upstreams[0].observed.headers[0]["authorization"] == "Bearer key-0"


def test_stream_pass_through(upstreams: list[FakeUpstream]) -> None:
    with client_for(gateway_config([u.url for u in upstreams])) as client:
        response, events = stream_events(client, {"model": "gpt-x", "messages": HI})
    assert response.headers["x-interference-deployment"] == "up0/upstream-model"
    for event in events:
        validate(event, "CreateChatCompletionStreamResponse")
        assert event["model"] == "gpt-x"
    assert len({e["id"] for e in events}) == 1
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert text_of(events) == "Hello from up0 w0 w1 w2 w3"
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in e for e in events)  # the client did not ask for it
    assert upstreams[0].observed.requests[0]["stream_options"] == {"include_usage": True}


FAULTS: list[tuple[str, dict[str, Any]]] = [
    ("refused", {}),
    ("hang before first byte", {"hang_before_first_byte": 5}),
    ("500", {"status": 500}),
    ("503", {"status": 503}),
    ("429 with Retry-After", {"status": 429, "retry_after": "1"}),
    ("401", {"status": 401}),
    ("malformed JSON", {"malformed": True}),
    ("stream cut before content", {"cut_after_chunks": 0}),
]


FAULT_CASES = [
    pytest.param(case, faults, stream, id=f"{case}, {'stream' if stream else 'non-stream'}")
    for case, faults in FAULTS
    for stream in (True, False)
    if stream or "stream" not in case  # a non-streamed answer has no chunks to cut
]


@pytest.mark.parametrize(("case", "faults", "stream"), FAULT_CASES)
def test_each_fault_falls_back_to_the_healthy_deployment(
    upstreams: list[FakeUpstream], case: str, faults: dict[str, Any], stream: bool
) -> None:
    bad, good = upstreams
    for key, value in faults.items():
        setattr(bad.faults, key, value)
    first_url = refused_url() if case == "refused" else bad.url
    with client_for(gateway_config([first_url, good.url])) as client:
        started = time.perf_counter()
        if stream:
            response, events = stream_events(client, {"model": "gpt-x", "messages": HI})
            text = text_of(events)
        else:
            response = client.post("/v1/chat/completions", json={"model": "gpt-x", "messages": HI})
            text = response.json()["choices"][0]["message"]["content"]
        elapsed = time.perf_counter() - started
    assert response.status_code == 200
    assert text == "Hello from up1 w0 w1 w2 w3"
    assert response.headers["x-interference-deployment"] == "up1/upstream-model"
    assert response.headers["x-interference-attempts"] == "2"
    bound = TIMEOUTS["first_token"] if stream else TIMEOUTS["total"]
    if case == "hang before first byte":
        assert bound <= elapsed < bound + 1.5  # the timeout fired at its bound
        for _ in range(50):  # and the abandoned upstream request was closed
            if bad.observed.disconnects:
                break
            time.sleep(0.02)
        assert bad.observed.disconnects == 1
    else:
        assert elapsed < 1.0


@pytest.mark.parametrize(("status", "answered"), [(400, 400), (404, 404), (413, 413), (422, 400)])
def test_client_errors_are_not_retried(
    upstreams: list[FakeUpstream], status: int, answered: int
) -> None:
    bad, good = upstreams
    bad.faults.status = status
    with client_for(gateway_config([bad.url, good.url])) as client:
        response = client.post("/v1/chat/completions", json={"model": "gpt-x", "messages": HI})
    assert response.status_code == answered  # 422 is OpenAI's 400
    validate(response.json(), "ErrorResponse")
    assert "up0 says" in response.json()["error"]["message"]
    assert good.observed.requests == []


def test_cooldown_skips_then_recovers(upstreams: list[FakeUpstream]) -> None:
    bad, good = upstreams
    bad.faults.status = 500
    config = gateway_config([bad.url, good.url], cooldown={"failures": 2, "seconds": 1})
    with client_for(config) as client:
        for _ in range(4):
            response = client.post("/v1/chat/completions", json={"model": "gpt-x", "messages": HI})
            assert response.headers["x-interference-deployment"] == "up1/upstream-model"
        assert len(bad.observed.requests) == 2  # skipped after the second failure
        state = client.get("/v1/providers").json()["models"]["gpt-x"]["deployments"][0]
        assert state["healthy"] is False
        assert state["consecutive_failures"] == 2
        bad.faults.status = None
        time.sleep(1.1)
        response = client.post("/v1/chat/completions", json={"model": "gpt-x", "messages": HI})
        assert response.headers["x-interference-deployment"] == "up0/upstream-model"
        assert client.get("/v1/providers").json()["models"]["gpt-x"]["deployments"][0]["healthy"]


def test_a_failure_after_streaming_began_ends_with_an_error_event(
    upstreams: list[FakeUpstream], caplog: pytest.LogCaptureFixture
) -> None:
    bad, good = upstreams
    bad.faults.hang_after_chunks = 2
    bad.faults.hang_seconds = 5
    with client_for(gateway_config([bad.url, good.url])) as client:
        started = time.perf_counter()
        response, events = stream_events(client, {"model": "gpt-x", "messages": HI})
        elapsed = time.perf_counter() - started
    assert response.status_code == 200
    assert text_of(events) == "Hello from up0 w0"  # no silent switch mid-answer
    assert "error" in events[-1]
    validate(events[-1], "ErrorResponse")
    assert "idle gap" in events[-1]["error"]["message"]
    assert TIMEOUTS["idle"] <= elapsed < TIMEOUTS["idle"] + 1.5
    lines = [r for r in caplog.records if r.name == "interference.requests"]
    assert len(lines) == 1  # the failure is logged once, on the request's line
    fields = lines[0].fields
    assert lines[0].levelname == "WARNING"
    assert fields["deployment"] == "up0/upstream-model"
    assert (fields["outcome"], fields["error"]) == ("error", "upstream_timeout")


def test_cut_stream_after_content_is_an_error_event(upstreams: list[FakeUpstream]) -> None:
    bad, good = upstreams
    bad.faults.cut_after_chunks = 2
    with client_for(gateway_config([bad.url, good.url])) as client:
        _, events = stream_events(client, {"model": "gpt-x", "messages": HI})
    assert "error" in events[-1]
    assert events[-1]["error"]["code"] == "upstream_error"


def test_pinning_a_provider(upstreams: list[FakeUpstream]) -> None:
    with client_for(gateway_config([u.url for u in upstreams])) as client:
        response = client.post(
            "/v1/chat/completions", json={"model": "gpt-x", "messages": HI, "provider": "up1"}
        )
        assert response.headers["x-interference-deployment"] == "up1/upstream-model"
        refused = client.post(
            "/v1/chat/completions",
            json={"model": "gpt-x", "messages": HI, "provider": "http://169.254.169.254/v1"},
        )
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "provider"
    assert len(upstreams[0].observed.requests) == 0


def test_models_and_provider_status(upstreams: list[FakeUpstream]) -> None:
    with client_for(gateway_config([u.url for u in upstreams])) as client:
        models = client.get("/v1/models").json()
        status = client.get("/v1/providers").json()
    validate(models, "ListModelsResponse")
    assert [m["id"] for m in models["data"]] == ["gpt-x"]
    assert models["data"][0]["owned_by"] == "openai"
    assert [p["name"] for p in status["providers"]] == ["up0", "up1"]
    assert status["strategy"] == "ordered"
    assert [d["deployment"] for d in status["models"]["gpt-x"]["deployments"]] == [
        "up0/upstream-model",
        "up1/upstream-model",
    ]


def test_closing_the_stream_closes_the_upstream_request(upstreams: list[FakeUpstream]) -> None:
    upstream = upstreams[0]
    upstream.faults.chunk_delay = 0.2
    provider = OpenAIProvider(
        "up0", RemoteProviderConfig(kind="openai", base_url=f"{upstream.url}/v1")
    )
    request = ChatCompletionRequest.model_validate({"model": "m", "messages": HI})

    async def scenario() -> None:
        await provider.start()
        try:
            stream = provider.stream_chat(request, "upstream-model")
            await anext(stream)
            await anext(stream)
            await stream.aclose()
            for _ in range(100):
                if upstream.observed.disconnects:
                    break
                await asyncio.sleep(0.02)
        finally:
            await provider.aclose()

    asyncio.run(scenario())
    assert upstream.observed.disconnects == 1
    assert upstream.observed.completed_streams == 0


@pytest.mark.parametrize(
    "message",
    [
        "This model's maximum context length is 8192 tokens.",
        "prompt is too long: 210000 tokens > 200000 maximum",
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
    ],
)
def test_an_upstream_context_overflow_is_context_length_exceeded(message: str) -> None:
    from interference.upstream.errors import error_from_status

    body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
    error = error_from_status("up", 400, body)
    assert error.code == "context_length_exceeded"
    assert error.status == 400
    assert not error.retryable
