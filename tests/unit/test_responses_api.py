"""``/v1/responses`` over fake providers: the spec's shapes (validated), the strict stream reader,
stored responses and ``previous_response_id``, tools (function, namespace, custom, hosted),
errors before and after a stream began, keep-alives, and Codex's recorded request replayed."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from interference.errors import ContextLengthExceededError, UpstreamError
from tests.support.fakes import FakeProvider, ThinkingToolFake
from tests.support.responses_stream import ResponseStream, read_stream
from tests.support.spec import validate
from tests.unit.test_messages_api import SlowStart, app_client

FIXTURES = Path(__file__).parents[1] / "fixtures" / "agents"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city",
    "strict": False,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
def fake() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[TestClient]:
    with app_client(fake) as test_client:
        yield test_client


def create(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/responses", json={"model": "gpt-5-codex", **body})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    validate(data, "Response")
    return data


def stream(client: TestClient, **body: Any) -> ResponseStream:
    payload = {"model": "gpt-5-codex", "stream": True, **body}
    with client.stream("POST", "/v1/responses", json=payload) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return read_stream(response.read())


def openai_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    validate(response.json(), "ErrorResponse")
    error: dict[str, Any] = response.json()["error"]
    return error


def test_a_response_is_stored_read_listed_and_deleted(client: TestClient) -> None:
    first = create(client, input="hi", instructions="Be brief.", metadata={"k": "v"})
    assert first["id"].startswith("resp_")
    assert first["status"] == "completed"
    assert first["instructions"] == "Be brief."
    assert first["metadata"] == {"k": "v"}
    (item,) = first["output"]
    assert item["type"] == "message"
    assert item["content"][0]["text"] == "Hello world!"
    assert first["usage"]["input_tokens"] == 7
    assert first["usage"]["output_tokens"] == 3
    assert client.get(f"/v1/responses/{first['id']}").json() == first
    items = client.get(f"/v1/responses/{first['id']}/input_items").json()
    assert items["object"] == "list"
    assert items["data"][0]["content"] == [{"type": "input_text", "text": "hi"}]
    deleted = client.delete(f"/v1/responses/{first['id']}").json()
    assert deleted == {"id": first["id"], "object": "response.deleted", "deleted": True}
    error = openai_error(client.get(f"/v1/responses/{first['id']}"), 404)
    assert error["param"] == "response_id"
    openai_error(client.delete(f"/v1/responses/{first['id']}"), 404)


def test_a_streamed_response(client: TestClient) -> None:
    result = stream(client, input=[{"role": "user", "content": "hi"}])
    assert result.text == "Hello world!"
    assert result.response["status"] == "completed"
    types = [event["type"] for event in result.events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert client.get(f"/v1/responses/{result.response['id']}").json() == result.response


def test_previous_response_id_carries_the_conversation(
    client: TestClient, fake: FakeProvider
) -> None:
    first = create(client, input="hi", instructions="Be brief.")
    result = stream(client, input="again", previous_response_id=first["id"])
    assert result.response["previous_response_id"] == first["id"]
    sent = fake.requests[1]
    assert [(m.role, m.content) for m in sent.messages] == [
        ("user", "hi"),
        ("assistant", "Hello world!"),
        ("user", "again"),
    ]  # the instructions do not carry over
    third = create(client, input="and?", previous_response_id=result.response["id"])
    assert [m.role for m in fake.requests[2].messages] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert third["previous_response_id"] == result.response["id"]


def test_store_false_keeps_nothing_and_an_unknown_previous_id_is_a_400(client: TestClient) -> None:
    unstored = create(client, input="hi", store=False)
    assert unstored["store"] is False
    openai_error(client.get(f"/v1/responses/{unstored['id']}"), 404)
    response = client.post(
        "/v1/responses",
        json={"model": "gpt-4o", "input": "x", "previous_response_id": unstored["id"]},
    )
    error = openai_error(response, 400)
    assert error["param"] == "previous_response_id"
    assert error["code"] == "previous_response_not_found"
    assert unstored["id"] in error["message"]


def test_a_server_that_stores_nothing_says_so(fake: FakeProvider) -> None:
    with app_client(fake, response_store={"enabled": False}) as client:
        first = create(client, input="hi")
        openai_error(client.get(f"/v1/responses/{first['id']}"), 404)
        response = client.post(
            "/v1/responses",
            json={"model": "gpt-4o", "input": "x", "previous_response_id": first["id"]},
        )
        assert "stores no responses" in openai_error(response, 400)["message"]


def test_a_function_call_round_trip_with_reasoning() -> None:
    fake = ThinkingToolFake(thoughts=("Let me ", "check."))
    with app_client(fake) as client:
        result = stream(client, input="Weather in Paris?", tools=[WEATHER])
        reasoning, call = result.response["output"]
        assert reasoning["type"] == "reasoning"
        assert reasoning["content"] == [{"type": "reasoning_text", "text": "Let me check."}]
        assert call["type"] == "function_call"
        assert call["name"] == "get_weather"
        assert json.loads(call["arguments"]) == {"city": "Paris"}
        assert call["call_id"] == "call_fake_1"
        follow_up = [
            {"role": "user", "content": "Weather in Paris?"},
            reasoning,
            call,
            {"type": "function_call_output", "call_id": call["call_id"], "output": "18 C"},
        ]
        answer = create(client, input=follow_up, tools=[WEATHER])
    assert answer["output"][-1]["content"][0]["text"] == "Hello world!"
    sent = fake.requests[-1].messages
    assert [m.role for m in sent] == ["user", "assistant", "tool"]
    assert sent[1].tool_calls is not None
    assert sent[1].tool_calls[0].id == "call_fake_1"
    assert sent[2].tool_call_id == "call_fake_1"
    assert sent[2].content == "18 C"


def test_namespace_tools_are_flattened_and_named_back() -> None:
    namespace = {
        "type": "namespace",
        "name": "multi_agent_v1",
        "description": "Sub-agents",
        "tools": [{**WEATHER, "name": "spawn_agent"}],
    }
    fake = ThinkingToolFake(arguments='{"task": "x"}')
    with app_client(fake) as client:
        whole = create(client, input="go", tools=[namespace, WEATHER])
        streamed = stream(client, input="go", tools=[namespace, WEATHER])
    offered = [t.function.name for t in fake.requests[0].tools or ()]
    assert offered == ["multi_agent_v1__spawn_agent", "get_weather"]
    for response in (whole, streamed.response):
        (call,) = response["output"]
        assert (call["namespace"], call["name"]) == ("multi_agent_v1", "spawn_agent")


def test_a_custom_tool_takes_free_text() -> None:
    patch = "*** Begin Patch\n*** End Patch"
    apply_patch = {
        "type": "custom",
        "name": "apply_patch",
        "description": "Edit files.",
        "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"},
    }
    fake = ThinkingToolFake(arguments=json.dumps({"input": patch}))
    with app_client(fake) as client:
        result = stream(client, input="fix it", tools=[apply_patch])
        (call,) = result.response["output"]
        assert call["type"] == "custom_tool_call"
        assert call["input"] == patch
        follow_up = [
            {"role": "user", "content": "fix it"},
            call,
            {"type": "custom_tool_call_output", "call_id": call["call_id"], "output": "Done!"},
        ]
        create(client, input=follow_up, tools=[apply_patch])
    function = (fake.requests[0].tools or [])[0].function
    assert function.parameters is not None
    assert function.parameters["required"] == ["input"]
    assert function.description is not None
    assert "start: /.+/" in function.description
    sent = fake.requests[-1].messages
    assert sent[1].tool_calls is not None
    assert json.loads(sent[1].tool_calls[0].function.arguments) == {"input": patch}


def test_hosted_tools_are_left_out_with_one_warning(
    client: TestClient, fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    from interference.api import responses_translation

    responses_translation._warned.discard("file_search")
    hosted = [{"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["x"]}]
    with caplog.at_level(logging.WARNING, logger="interference.api.responses_translation"):
        for _ in range(3):
            create(client, input="hi", tools=[*hosted, WEATHER])
    assert [t.function.name for t in fake.requests[0].tools or ()] == ["get_weather"]
    warnings = [r.getMessage() for r in caplog.records if "file_search" in r.getMessage()]
    assert len(warnings) == 1


def test_text_format_tool_choice_and_sampling_reach_the_chat_request(
    client: TestClient, fake: FakeProvider
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    create(
        client,
        input="hi",
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema}},
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        max_output_tokens=64,
        temperature=0.2,
        top_p=0.5,
        reasoning={"effort": "low"},
        include=["reasoning.encrypted_content"],
        prompt_cache_key="thread-1",
        client_metadata={"x": "y"},
    )
    sent = fake.requests[0].model_dump(exclude_none=True, by_alias=True)
    assert sent["response_format"]["json_schema"]["schema"] == schema
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"]) == (64, 0.2, 0.5)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": 5}, "input"),
        ({"input": [{"type": "function_call", "name": "f"}]}, "input.0.call_id"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input.0.role"),
        ({"input": "x", "tools": [{"type": "function"}]}, "tools.0.name"),
        ({"input": "x", "temperature": 3}, "temperature"),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ],
)
def test_bad_requests_are_400s_naming_the_param(
    client: TestClient, body: dict[str, Any], param: str
) -> None:
    response = client.post("/v1/responses", json={"model": "gpt-4o", **body})
    assert openai_error(response, 400)["param"] == param


def test_unknown_model_and_bad_json(client: TestClient) -> None:
    response = client.post("/v1/responses", json={"model": "llama-nope", "input": "x"})
    assert openai_error(response, 404)["code"] == "model_not_found"
    bad = client.post(
        "/v1/responses", content=b"{oops", headers={"content-type": "application/json"}
    )
    openai_error(bad, 400)


def test_a_context_overflow_before_the_stream_is_a_400() -> None:
    error = ContextLengthExceededError("request (9000 tokens) exceeds context (2048 tokens)")
    with app_client(FakeProvider(fail_before=error)) as client:
        for streamed in (False, True):
            body = {"model": "gpt-4o", "input": "x", "stream": streamed}
            response = client.post("/v1/responses", json=body)
            assert openai_error(response, 400)["code"] == "context_length_exceeded"


def test_a_failure_mid_stream_is_response_failed() -> None:
    failing = FakeProvider(fail_after=1, fail_with=UpstreamError("fake: reset"))
    with app_client(failing) as client:
        result = stream(client, input="x")
    assert result.response["status"] == "failed"
    assert result.response["error"] == {"code": "server_error", "message": "fake: reset"}


def test_a_slow_first_token_gets_keep_alives() -> None:
    with app_client(SlowStart(0.35), keepalive_s=0.1) as client:
        result = stream(client, input="x")
    assert result.comments >= 2
    assert result.text == "Hello world!"


def test_an_overflow_after_the_keep_alives_began_is_response_failed_with_its_code() -> None:
    error = ContextLengthExceededError("request (9000 tokens) exceeds context (2048 tokens)")
    with app_client(SlowStart(0.25, fail=error), keepalive_s=0.1) as client:
        result = stream(client, input="x")
    assert result.response["status"] == "failed"
    assert result.response["error"]["code"] == "context_length_exceeded"


def test_codex_s_recorded_request_is_answered() -> None:
    recorded = json.loads((FIXTURES / "codex_responses.json").read_text())
    fake = FakeProvider()
    with (
        app_client(fake) as client,
        client.stream(
            "POST", recorded["path"], json=recorded["body"], headers={"authorization": "Bearer x"}
        ) as response,
    ):
        assert response.status_code == 200
        result = read_stream(response.read())
    assert result.text == "Hello world!"
    sent = fake.requests[0]
    names = [tool.function.name for tool in sent.tools or ()]
    assert len(names) == 12  # 7 functions and the namespace's 5; web_search left out
    assert "multi_agent_v1__spawn_agent" in names
    assert [m.role for m in sent.messages] == ["system", "user"]  # developer x2, user x2
    assert "Say hi" in str(sent.messages[-1].content)


def test_codex_s_request_with_a_custom_tool_and_tool_search_is_answered() -> None:
    recorded = json.loads((FIXTURES / "codex_responses_gpt55.json").read_text())
    fake = FakeProvider()
    with app_client(fake) as client:
        result = stream(client, **{k: v for k, v in recorded["body"].items() if k != "stream"})
    assert result.response["status"] == "completed"
    names = [tool.function.name for tool in fake.requests[0].tools or ()]
    assert "apply_patch" in names
    assert "tool_search" not in names
