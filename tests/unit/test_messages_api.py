"""``POST /v1/messages`` and ``/v1/messages/count_tokens`` over fake providers: Anthropic's
shapes, streamed (checked by the strict reader) and not, its errors, keep-alive pings."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from interference.api.app import create_app
from interference.config import Config
from interference.errors import ContextLengthExceededError, InterferenceError, UpstreamError
from interference.wire.chat import ChatCompletionChunk, ChatCompletionRequest
from tests.support.anthropic_stream import StreamResult, read_stream
from tests.support.fakes import FakeProvider

HI = [{"role": "user", "content": "hi"}]
HEADERS = {"anthropic-version": "2023-06-01"}


def app_client(provider: FakeProvider, **server: Any) -> TestClient:
    config = Config.model_validate({"server": server})
    return TestClient(create_app(config, providers=[provider]), raise_server_exceptions=False)


@pytest.fixture
def fake() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[TestClient]:
    with app_client(fake) as test_client:
        yield test_client


def stream(client: TestClient, body: dict[str, Any], path: str = "/v1/messages") -> StreamResult:
    with client.stream("POST", path, json=body, headers=HEADERS) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read()
    return read_stream(raw)


def test_a_message(client: TestClient, fake: FakeProvider) -> None:
    body = {"model": "fake-model", "max_tokens": 50, "system": "Be brief.", "messages": HI}
    response = client.post("/v1/messages", json=body, headers=HEADERS)
    assert response.status_code == 200
    message = response.json()
    assert message["id"].startswith("msg_")
    assert message | {"id": "x"} == {
        "id": "x",
        "type": "message",
        "role": "assistant",
        "model": "fake-model",
        "content": [{"type": "text", "text": "Hello world!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 7,
            "output_tokens": 3,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    sent = fake.requests[0]
    assert [m.role for m in sent.messages] == ["system", "user"]
    assert sent.max_tokens == 50


def test_a_streamed_message_with_the_beta_query(client: TestClient) -> None:
    body = {"model": "fake-model", "max_tokens": 50, "messages": HI, "stream": True}
    result = stream(client, body, "/v1/messages?beta=true")
    assert result.error is None
    assert result.message["content"] == [{"type": "text", "text": "Hello world!"}]
    assert result.message["stop_reason"] == "end_turn"
    assert result.message["usage"]["input_tokens"] == 7
    assert result.message["usage"]["output_tokens"] == 3
    assert result.pings == 0  # the first token came before the keep-alive interval


def test_unknown_fields_blocks_and_beta_headers_are_ignored(client: TestClient) -> None:
    body = {
        "model": "fake-model",
        "max_tokens": 32000,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "tool_reference", "tool_name": "x"},
                    {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}},
                    {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}},
                ],
            }
        ],
        "thinking": {"type": "adaptive"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
        "output_config": {"effort": "medium"},
        "service_tier": "auto",
        "some_future_field": [1, 2, 3],
        "tools": [
            {"name": "Bash", "input_schema": {"type": "object"}, "defer_loading": True},
            {"type": "web_search_20250305", "name": "web_search"},
        ],
    }
    headers = HEADERS | {"anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14"}
    response = client.post("/v1/messages?beta=true", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["content"][0]["text"] == "Hello world!"


def test_max_tokens_is_clamped_to_the_server_limit(fake: FakeProvider) -> None:
    with app_client(fake, limits={"max_tokens": 512}) as client:
        body = {"model": "fake-model", "max_tokens": 32000, "messages": HI}
        assert client.post("/v1/messages", json=body).status_code == 200
    assert fake.requests[0].max_tokens == 512


def anthropic_error(response: Any, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == kind
    message: str = body["error"]["message"]
    return message


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": "fake-model", "messages": HI}, "max_tokens: Field required"),
        ({"model": "fake-model", "max_tokens": 0, "messages": HI}, "max_tokens"),
        ({"model": "fake-model", "max_tokens": 5, "messages": []}, "messages"),
        ({"max_tokens": 5, "messages": HI}, "model"),
        (
            {"model": "fake-model", "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]},
            "messages.0.role",
        ),
        (
            {
                "model": "fake-model",
                "max_tokens": 5,
                "messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "f"}]}],
            },
            "content block 0 (tool_use)",
        ),
        (
            {"model": "fake-model", "max_tokens": 5, "messages": HI, "temperature": 1.5},
            "temperature",
        ),
        (
            {"model": "fake-model", "max_tokens": 5, "messages": HI, "tool_choice": {"type": "x"}},
            "tool_choice",
        ),
    ],
)
def test_bad_requests_are_anthropic_400s(
    client: TestClient, body: dict[str, Any], needle: str
) -> None:
    message = anthropic_error(client.post("/v1/messages", json=body), 400, "invalid_request_error")
    assert needle in message


def test_bad_json_wrong_type_and_unknown_model(client: TestClient) -> None:
    response = client.post(
        "/v1/messages", content=b"{not json", headers={"content-type": "application/json"}
    )
    anthropic_error(response, 400, "invalid_request_error")
    response = client.post("/v1/messages", content=b"x", headers={"content-type": "image/png"})
    anthropic_error(response, 415, "invalid_request_error")
    body = {"model": "llama-unknown-9", "max_tokens": 5, "messages": HI}
    message = anthropic_error(client.post("/v1/messages", json=body), 404, "not_found_error")
    assert "llama-unknown-9" in message
    anthropic_error(client.get("/v1/messages"), 405, "invalid_request_error")


def test_an_api_key_in_x_api_key_or_bearer(fake: FakeProvider) -> None:
    body = {"model": "fake-model", "max_tokens": 5, "messages": HI}
    with app_client(fake, api_keys=["sk-local"]) as client:
        refused = client.post("/v1/messages", json=body)
        message = anthropic_error(refused, 401, "authentication_error")
        assert "x-api-key" in message
        ok = client.post("/v1/messages", json=body, headers={"x-api-key": "sk-local"})
        assert ok.status_code == 200
        bearer = {"authorization": "Bearer sk-local"}
        assert client.post("/v1/messages", json=body, headers=bearer).status_code == 200
        counted = client.post("/v1/messages/count_tokens", json=body, headers=bearer)
        assert counted.status_code == 200


def test_an_upstream_failure_before_output_is_an_http_error() -> None:
    failing = FakeProvider(fail_before=UpstreamError("fake: connection refused"))
    with app_client(failing) as client:
        body = {"model": "fake-model", "max_tokens": 5, "messages": HI, "stream": True}
        anthropic_error(client.post("/v1/messages", json=body), 502, "api_error")


def test_a_context_overflow_says_prompt_is_too_long() -> None:
    error = ContextLengthExceededError(
        "the request (9000 tokens) exceeds the available context size (2048 tokens)"
    )
    with app_client(FakeProvider(fail_before=error)) as client:
        for stream_it in (False, True):
            body = {"model": "fake-model", "max_tokens": 5, "messages": HI, "stream": stream_it}
            message = anthropic_error(
                client.post("/v1/messages", json=body), 400, "invalid_request_error"
            )
            assert message == "prompt is too long: 9000 tokens > 2048 maximum"


def test_a_failure_mid_stream_is_an_error_event() -> None:
    failing = FakeProvider(fail_after=2, fail_with=UpstreamError("fake: connection reset"))
    with app_client(failing) as client:
        body = {"model": "fake-model", "max_tokens": 5, "messages": HI, "stream": True}
        result = stream(client, body)
    assert result.error is not None
    assert result.error["type"] == "api_error"
    assert result.message["content"] == [{"type": "text", "text": "Hello world"}]


class SlowStart(FakeProvider):
    """Reads the prompt for ``prefill`` seconds, then answers or fails."""

    def __init__(self, prefill: float, fail: InterferenceError | None = None) -> None:
        super().__init__()
        self.prefill = prefill
        self.fail = fail

    async def stream_chat(
        self, request: ChatCompletionRequest, model: str
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        await asyncio.sleep(self.prefill)
        if self.fail is not None:
            raise self.fail
        async for chunk in super().stream_chat(request, model):
            yield chunk


def test_a_slow_first_token_gets_pings_after_message_start() -> None:
    with app_client(SlowStart(0.35), keepalive_s=0.1) as client:
        body = {"model": "fake-model", "max_tokens": 5, "messages": HI, "stream": True}
        result = stream(client, body)
    assert result.events[0]["type"] == "message_start"
    assert result.events[1]["type"] == "ping"
    assert 2 <= result.pings <= 4
    assert result.error is None
    assert result.message["content"] == [{"type": "text", "text": "Hello world!"}]


def test_a_failure_after_the_pings_began_is_an_error_event() -> None:
    slow = SlowStart(0.25, fail=UpstreamError("fake: went away"))
    with app_client(slow, keepalive_s=0.1) as client:
        body = {"model": "fake-model", "max_tokens": 5, "messages": HI, "stream": True}
        result = stream(client, body)
    assert result.pings >= 1
    assert result.error == {"type": "api_error", "message": "fake: went away"}


def test_count_tokens_grows_with_the_request(client: TestClient) -> None:
    def count(body: dict[str, Any]) -> int:
        response = client.post("/v1/messages/count_tokens?beta=true", json=body, headers=HEADERS)
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"input_tokens"}
        tokens: int = response.json()["input_tokens"]
        return tokens

    small = count({"model": "fake-model", "messages": HI})
    longer = count({"model": "fake-model", "messages": [{"role": "user", "content": "x" * 4000}]})
    tool = {"name": "Read", "description": "d" * 400, "input_schema": {"type": "object"}}
    with_tools = count({"model": "fake-model", "messages": HI, "tools": [tool]})
    assert 1 <= small < 20
    assert 1000 <= longer <= 1020
    assert with_tools >= small + 100
    response = client.post("/v1/messages/count_tokens", json={"model": "nope", "messages": HI})
    anthropic_error(response, 404, "not_found_error")
    response = client.post("/v1/messages/count_tokens", json={"model": "fake-model"})
    anthropic_error(response, 400, "invalid_request_error")


def test_models_in_anthropic_shape_when_asked_by_an_anthropic_client(client: TestClient) -> None:
    listed = client.get("/v1/models", headers=HEADERS).json()
    assert listed["has_more"] is False
    ids = [model["id"] for model in listed["data"]]
    assert ids[0] == "fake-model"
    assert "gpt-4o" in ids
    assert (listed["first_id"], listed["last_id"]) == (ids[0], ids[-1])
    first = listed["data"][0]
    assert first["type"] == "model"
    assert first["display_name"] == "fake-model"
    assert first["created_at"].endswith("Z")
    one = client.get("/v1/models/fake-model", headers=HEADERS).json()
    assert one == first
    assert client.get("/v1/models").json()["object"] == "list"  # OpenAI's, without the header


@pytest.mark.parametrize(
    "fixture", ["claude_code_messages.json", "claude_code_messages_default_model.json"]
)
def test_claude_code_s_recorded_request_is_answered(fixture: str) -> None:
    recorded = json.loads((Path(__file__).parents[1] / "fixtures" / "agents" / fixture).read_text())
    fake = FakeProvider()
    headers = {k: v for k, v in recorded["headers"].items() if k.startswith("anthropic-")}
    with app_client(fake) as client:
        body = recorded["body"] | {"model": "fake-model"}
        result = stream(client, body, recorded["path"]) if body.get("stream") else None
        assert result is not None
        response = client.post(recorded["path"], json=body | {"stream": False}, headers=headers)
    assert result.error is None
    assert result.message["content"] == [{"type": "text", "text": "Hello world!"}]
    assert response.status_code == 200
    sent = fake.requests[0]
    assert len(sent.tools or ()) == len(recorded["body"]["tools"])
    roles = [m.role for m in sent.messages]
    assert roles[0] == "system"
    assert "system" not in roles[1:]  # a trailing system message became the user's
    assert roles[1:] == ["user"]  # four text blocks, and the reminder, in one user turn
    assert sent.max_tokens == recorded["body"]["max_tokens"]
