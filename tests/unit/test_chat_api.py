"""The chat completion route over a fake provider: wire shapes, streaming, model names."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from interference.api.app import create_app
from interference.config import Config
from interference.errors import ContextLengthExceededError, UpstreamError
from tests.support.asgi import post_once
from tests.support.fakes import FakeProvider
from tests.support.spec import validate

MESSAGES = [{"role": "user", "content": "hi"}]


def sse_events(client: TestClient, body: dict[str, Any]) -> list[str]:
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    assert raw.endswith("\n\n")
    events = raw.split("\n\n")[:-1]
    assert all(e.startswith("data: ") for e in events), events
    return [e.removeprefix("data: ") for e in events]


def test_non_stream_is_a_valid_chat_completion(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions", json={"model": "fake-model", "messages": MESSAGES}
    )
    assert response.status_code == 200
    body = response.json()
    validate(body, "CreateChatCompletionResponse")
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "fake-model"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Hello world!", "refusal": None}
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    assert body["usage"]["completion_tokens"] == 3


def test_response_echoes_the_alias_the_client_used(client: TestClient) -> None:
    for name in ("gpt-3.5-turbo", "GPT-4o", "fake-model"):
        body = client.post("/chat/completions", json={"model": name, "messages": MESSAGES}).json()
        assert body["model"] == name


def test_stream_framing_and_chunks(client: TestClient) -> None:
    events = sse_events(client, {"model": "gpt-4", "messages": MESSAGES, "stream": True})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert {c["created"] for c in chunks} == {chunks[0]["created"]}
    assert {c["model"] for c in chunks} == {"gpt-4"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "Hello world!"
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert all("usage" not in c for c in chunks)


def test_stream_include_usage_adds_a_final_usage_chunk(client: TestClient) -> None:
    body = {
        "model": "fake-model",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = [json.loads(e) for e in sse_events(client, body)[:-1]]
    last = chunks[-1]
    validate(last, "CreateChatCompletionStreamResponse")
    assert last["choices"] == []
    assert last["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_n_choices_stream_with_their_indexes(client: TestClient) -> None:
    chunks = [
        json.loads(e)
        for e in sse_events(
            client, {"model": "fake-model", "messages": MESSAGES, "stream": True, "n": 2}
        )[:-1]
    ]
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk["choices"]:
            texts[choice["index"]] += choice["delta"].get("content", "")
    assert texts == {0: "Hello world!", 1: "Hello world!"}


def test_error_before_first_token_is_an_http_status() -> None:
    fake = FakeProvider(fail_before=ContextLengthExceededError("too long", param="messages"))
    with TestClient(create_app(Config(), providers=[fake])) as client:
        response = client.post(
            "/v1/chat/completions",
            json={"model": "fake-model", "messages": MESSAGES, "stream": True},
        )
    assert response.status_code == 400
    body = response.json()
    validate(body, "ErrorResponse")
    assert body["error"] == {
        "message": "too long",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }


def test_error_after_streaming_began_is_an_error_event_then_done() -> None:
    fake = FakeProvider(fail_after=1, fail_with=UpstreamError("engine died"))
    with TestClient(create_app(Config(), providers=[fake])) as client:
        events = sse_events(client, {"model": "fake-model", "messages": MESSAGES, "stream": True})
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])
    validate(error, "ErrorResponse")
    assert error["error"]["message"] == "engine died"
    assert error["error"]["code"] == "upstream_error"
    assert json.loads(events[1])["choices"][0]["delta"]["content"] == "Hello"


def test_unknown_model_is_404_model_not_found(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json={"model": "nope", "messages": MESSAGES})
    assert response.status_code == 404
    body = response.json()
    validate(body, "ErrorResponse")
    assert body["error"]["code"] == "model_not_found"
    assert body["error"]["param"] == "model"


def test_request_reaches_the_provider_parsed(client: TestClient, fake: FakeProvider) -> None:
    client.post(
        "/v1/chat/completions",
        json={
            "model": "fake-model",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "again"},
            ],
            "temperature": 0.5,
            "stop": ["\n"],
            "seed": 3,
            "some_future_field": {"ignored": True},
        },
    )
    request = fake.requests[-1]
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "user"]
    assert request.temperature == 0.5
    assert request.stop == ["\n"]
    assert request.seed == 3


@pytest.mark.parametrize("path", ["/v1/models", "/models"])
def test_models_list(client: TestClient, path: str) -> None:
    body = client.get(path).json()
    validate(body, "ListModelsResponse")
    ids = [m["id"] for m in body["data"]]
    assert ids[0] == "fake-model"
    assert {"gpt-3.5-turbo", "gpt-4", "gpt-4o", "gpt-4o-mini", "gpt-4.1"} <= set(ids)


def test_model_by_id(client: TestClient) -> None:
    body = client.get("/v1/models/gpt-4o").json()
    validate(body, "Model")
    assert body["id"] == "gpt-4o"
    missing = client.get("/v1/models/unknown")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


def test_health_reports_readiness(client: TestClient, fake: FakeProvider) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["ready"] is True
    assert body["providers"][0]["name"] == "fake"
    assert fake.started


def test_landing_page_for_browsers_and_tools(client: TestClient) -> None:
    html = client.get("/", headers={"accept": "text/html,application/xhtml+xml"})
    assert html.status_code == 200
    assert "text/html" in html.headers["content-type"]
    assert '<script type="module" src="/ui/app.js">' in html.text  # the web chat
    assert "script-src 'self'" in html.headers["content-security-policy"]
    assert html.headers["cache-control"] == "no-cache"
    info = client.get("/").json()
    assert info["base_url"].endswith("/v1")
    assert info["models"] == ["fake-model"]


def test_providers_are_closed_with_the_app(fake: FakeProvider) -> None:
    with TestClient(create_app(Config(), providers=[fake])):
        assert fake.started
    assert fake.closed


def test_client_disconnect_closes_the_provider_stream() -> None:
    import asyncio

    fake = FakeProvider(words=tuple(f" w{i}" for i in range(1000)), delay=0.01)
    app = create_app(Config(), providers=[fake])
    body = json.dumps({"model": "fake-model", "messages": MESSAGES, "stream": True}).encode()
    sent: list[dict[str, Any]] = []

    async def scenario() -> None:
        headers = [(b"content-type", b"application/json")]
        await post_once(app, "/v1/chat/completions", body, headers, sent, disconnect_after=0.2)
        await asyncio.wait_for(fake.closed_early.wait(), timeout=1)

    asyncio.run(scenario())
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert 2 <= len(bodies) < 200  # some tokens went out, then generation stopped


def test_web_chat_assets(client: TestClient) -> None:
    for name, kind in (
        ("app.js", "text/javascript"),
        ("markdown.js", "text/javascript"),
        ("app.css", "text/css"),
        ("icon.svg", "image/svg+xml"),
    ):
        asset = client.get(f"/ui/{name}")
        assert asset.status_code == 200, name
        assert asset.headers["content-type"].startswith(kind)
        assert asset.headers["cache-control"].startswith("public, max-age=")
        assert asset.headers["x-content-type-options"] == "nosniff"
        again = client.get(f"/ui/{name}", headers={"if-none-match": asset.headers["etag"]})
        assert again.status_code == 304
        assert not again.content
    for missing in ("nope.js", "index.html", "..%2Fapp.py", ".hidden.js", "web_chat.py"):
        assert client.get(f"/ui/{missing}").status_code == 404, missing
