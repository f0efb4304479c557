"""The official ``openai`` SDK's Responses API against ``interference serve`` in front of fake
upstreams of each kind (OpenAI-compatible, Anthropic, Gemini) on real sockets: create, stream
(the SDK's events and the strict reader), a function-call round trip, previous_response_id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.integration.test_gateway_anthropic import Upstreams
from tests.support.responses_stream import read_stream
from tests.support.server import ServerProcess, start_server

MODELS = ["gpt-via-openai", "gpt-via-anthropic", "gpt-via-gemini"]
TEXTS = ("Hello from openai", "Hello there, world!", "Hello world")
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather of a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    started = Upstreams()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def inner(upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Another interference, in front of the OpenAI fake: an upstream that serves Responses."""
    config = {
        "providers": {
            "oai": {"kind": "openai", "base_url": f"{upstreams.openai.url}/v1", "api_key": "k"}
        },
        "models": {"inner-model": {"deployments": [{"provider": "oai", "model": "up-model"}]}},
    }
    server = start_server(tmp_path_factory.mktemp("responses-inner"), json.dumps(config))
    yield server.url
    assert server.stop() == 0, server.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def gateway(
    upstreams: Upstreams, inner: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    assert upstreams.gemini.upstream is not None
    config: dict[str, Any] = {
        "providers": {
            "oai": {"kind": "openai", "base_url": f"{upstreams.openai.url}/v1", "api_key": "k"},
            "claude": {"kind": "anthropic", "base_url": upstreams.claude.upstream.url},
            "gem": {"kind": "gemini", "base_url": upstreams.gemini.upstream.url, "api_key": "k"},
            "inner": {"kind": "openai", "base_url": f"{inner}/v1", "responses": True},
        },
        "models": {
            "gpt-via-openai": {"deployments": [{"provider": "oai", "model": "up-model"}]},
            "gpt-via-anthropic": {"deployments": [{"provider": "claude", "model": "claude-x"}]},
            "gpt-via-gemini": {"deployments": [{"provider": "gem", "model": "gemini-x"}]},
            "gpt-via-responses": {"deployments": [{"provider": "inner", "model": "inner-model"}]},
        },
    }
    server: ServerProcess = start_server(
        tmp_path_factory.mktemp("responses-gateway"), json.dumps(config)
    )
    yield server.url
    assert server.stop() == 0, server.log.read_text()[-3000:]


@pytest.fixture
def client(gateway: str, upstreams: Upstreams) -> Iterator[openai.OpenAI]:
    upstreams.reset()
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0) as sdk:
        yield sdk


@pytest.mark.parametrize("model", MODELS)
def test_responses_create(client: openai.OpenAI, model: str) -> None:
    response = client.responses.create(model=model, input="Hi", instructions="Be brief.")
    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == model
    assert response.output_text in TEXTS
    (message,) = [item for item in response.output if item.type == "message"]
    assert message.content[0].type == "output_text"
    assert response.usage is not None
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_responses_stream(client: openai.OpenAI, gateway: str, model: str) -> None:
    with client.responses.stream(model=model, input="Hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert final.output_text in TEXTS
    body = {"model": model, "input": "Hi", "stream": True}
    raw = httpx.post(f"{gateway}/v1/responses", json=body, timeout=10)
    assert raw.status_code == 200
    read = read_stream(raw.content)  # sequence numbers, order, each event against the spec
    assert read.text == final.output_text
    assert read.response["status"] == "completed"


@pytest.mark.parametrize("streamed", [False, True])
def test_a_function_call_round_trip(
    client: openai.OpenAI, upstreams: Upstreams, streamed: bool
) -> None:
    question = [{"role": "user", "content": "Weather in Paris?"}]
    if streamed:
        with client.responses.stream(
            model="gpt-via-openai", input=question, tools=[WEATHER]
        ) as stream:
            first = stream.get_final_response()
    else:
        first = client.responses.create(model="gpt-via-openai", input=question, tools=[WEATHER])
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    second = client.responses.create(
        model="gpt-via-openai",
        input=[
            *question,
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "18 C, sunny"},
        ],
        tools=[WEATHER],
    )
    assert second.output_text == "Hello from openai"
    sent = upstreams.openai.observed.requests[-1]
    assert sent["messages"][-2]["tool_calls"][0]["id"] == call.call_id
    assert sent["messages"][-1] == {
        "role": "tool",
        "tool_call_id": call.call_id,
        "content": "18 C, sunny",
    }


@pytest.mark.parametrize("model", ["gpt-via-openai", "gpt-via-anthropic"])
def test_previous_response_id_carries_the_conversation(
    client: openai.OpenAI, upstreams: Upstreams, model: str
) -> None:
    first = client.responses.create(model=model, input="My name is Ada.", instructions="Be kind.")
    second = client.responses.create(
        model=model, input="What is my name?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id
    assert client.responses.retrieve(second.id).output_text == second.output_text
    if model == "gpt-via-openai":
        messages = upstreams.openai.observed.requests[-1]["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant", "user"]
        assert messages[0]["content"] == "My name is Ada."
        assert messages[1]["content"] == first.output_text
    else:
        sent = upstreams.claude.observed.requests[-1]
        assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    with pytest.raises(openai.BadRequestError) as unknown:
        client.responses.create(model=model, input="Hi", previous_response_id="resp_nope")
    assert unknown.value.param == "previous_response_id"


def test_an_upstream_that_serves_responses_gets_them_as_written(
    client: openai.OpenAI, gateway: str, inner: str
) -> None:
    first = client.responses.create(
        model="gpt-via-responses",
        input="My name is Ada.",
        extra_body={"prompt_cache_key": "k-1", "client_metadata": {"a": "b"}},
    )
    assert first.model == "inner-model"  # the upstream's own answer, not restamped here
    assert first.output_text == "Hello from openai"
    with httpx.Client() as http:
        assert http.get(f"{inner}/v1/responses/{first.id}").status_code == 200  # kept upstream
        assert http.get(f"{gateway}/v1/responses/{first.id}").status_code == 404  # not here
    second = client.responses.create(
        model="gpt-via-responses", input="And my name?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id  # the upstream knew it
    with client.responses.stream(model="gpt-via-responses", input="Hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert final.model == "inner-model"
    body = {"model": "gpt-via-responses", "input": "Hi", "stream": True}
    raw = httpx.post(f"{gateway}/v1/responses", json=body, timeout=10)
    read = read_stream(raw.content)  # the upstream's events, strict order and numbers
    assert read.response["model"] == "inner-model"
    assert read.text == "Hello from openai"


def test_a_previous_response_id_unknown_everywhere_is_still_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as unknown:
        client.responses.create(
            model="gpt-via-responses", input="Hi", previous_response_id="resp_nope"
        )
    assert unknown.value.param == "previous_response_id"  # the upstream's own refusal
