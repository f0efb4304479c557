"""The official ``openai`` SDK's Responses API against the real server and its embedded model,
under the model name Codex sends: create, stream (read by the strict reader too), a forced
function call and its output, previous_response_id, and a prompt too long for the context with
Codex's error code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.responses_stream import read_stream
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e

MODEL = "gpt-5-codex"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def sdk(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with sdk(server) as openai_client:
        yield openai_client


def test_responses_create(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL, instructions="You are friendly.", input="Say hello.", max_output_tokens=40
    )
    assert response.id.startswith("resp_")
    assert response.model == MODEL
    assert response.status in ("completed", "incomplete")
    assert response.output_text.strip()
    assert response.usage is not None
    assert response.usage.input_tokens > 5
    assert response.usage.output_tokens > 0


def test_max_output_tokens_makes_it_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL, input="Tell me a long story about a dragon.", max_output_tokens=5
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None
    assert response.usage.output_tokens == 5


def test_responses_stream(client: openai.OpenAI, http: httpx.Client) -> None:
    with client.responses.stream(model=MODEL, input="Say hello.", max_output_tokens=30) as stream:
        events = list(stream)  # get_final_response() wants response.completed, not .incomplete
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    last = events[-1]
    assert last.type in ("response.completed", "response.incomplete")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.strip()
    assert last.response.output_text == text
    body: dict[str, Any] = {"model": MODEL, "input": "Say hello.", "stream": True}
    raw = http.post("/v1/responses", json={**body, "max_output_tokens": 30})
    assert raw.status_code == 200
    read = read_stream(raw.content)  # sequence numbers, order, each event against the spec
    assert read.text.strip()


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_a_forced_function_call_and_its_output(client: openai.OpenAI, stream: bool) -> None:
    options: dict[str, Any] = {"model": MODEL, "tools": [WEATHER], "max_output_tokens": 100}
    question: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    if stream:
        with client.responses.stream(input=question, tool_choice="required", **options) as s:
            first = s.get_final_response()
    else:
        first = client.responses.create(input=question, tool_choice="required", **options)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) >= 1
    assert calls[0].name == "get_weather"
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    final = client.responses.create(
        input=[
            *question,
            *(call.model_dump(exclude_none=True) for call in calls),
            *(
                {"type": "function_call_output", "call_id": call.call_id, "output": "18 C"}
                for call in calls
            ),
        ],
        tool_choice="none",
        **options,
    )
    assert final.output_text.strip()


def test_previous_response_id_continues_the_conversation(client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL, input="My name is Ada.", max_output_tokens=20)
    second = client.responses.create(
        model=MODEL,
        input="What is my name?",
        previous_response_id=first.id,
        max_output_tokens=20,
    )
    assert second.previous_response_id == first.id
    assert second.usage is not None
    assert first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens  # the first turn came along
    items = client.responses.input_items.list(second.id)
    assert [item.type for item in items.data] == ["message"]


def test_a_prompt_too_long_has_codex_s_error_code(small_server: ServerProcess) -> None:
    with sdk(small_server) as client, pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=MODEL, input="word " * 600, max_output_tokens=10)
    assert refused.value.code == "context_length_exceeded"
    body = {"model": MODEL, "input": "word " * 600, "stream": True}
    raw = httpx.post(f"{small_server.url}/v1/responses", json=body, timeout=60)
    if raw.status_code == 200:  # began before the engine refused: response.failed says why
        read = read_stream(raw.content)
        assert read.events[-1]["type"] == "response.failed"
        assert read.response["error"]["code"] == "context_length_exceeded"
    else:
        assert raw.status_code == 400
        assert raw.json()["error"]["code"] == "context_length_exceeded"
