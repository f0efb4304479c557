"""The official ``anthropic`` SDK against ``interference serve`` in front of fake upstreams of
each kind (OpenAI-compatible, Anthropic, Gemini) on real sockets: messages, streams (also read
by the strict reader), tool round trips, count_tokens and errors."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import httpx
import pytest

from tests.support.anthropic_fake import TOOL_REPLY, FakeAnthropic
from tests.support.anthropic_stream import frames, read_stream
from tests.support.gemini_fake import FakeGemini
from tests.support.openai_fake import openai_upstream
from tests.support.server import ServerProcess, start_server
from tests.support.upstream import FakeUpstream

WEATHER = {
    "name": "get_weather",
    "description": "The weather of a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
HI = [{"role": "user", "content": "Hi"}]
MODELS = ["claude-via-openai", "claude-via-anthropic", "claude-via-gemini"]


class Upstreams:
    def __init__(self) -> None:
        self.openai = openai_upstream(
            "oai", pieces=["Hello", " from", " openai"], tool_arguments='{"city": "Paris"}'
        ).start()
        self.claude = FakeAnthropic()
        self.claude.upstream.start()
        self.gemini = FakeGemini()
        self.gemini.upstream = FakeUpstream(self.gemini.app()).start()

    def stop(self) -> None:
        for upstream in (self.openai, self.claude.upstream, self.gemini.upstream):
            assert upstream is not None
            upstream.stop()

    def reset(self) -> None:
        self.openai.reset()
        self.claude.reset()
        self.gemini.reset()
        assert self.gemini.upstream is not None
        self.gemini.upstream.reset()


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    started = Upstreams()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def gateway(upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    assert upstreams.gemini.upstream is not None
    config = {
        "providers": {
            "oai": {"kind": "openai", "base_url": f"{upstreams.openai.url}/v1", "api_key": "k"},
            "claude": {"kind": "anthropic", "base_url": upstreams.claude.upstream.url},
            "gem": {"kind": "gemini", "base_url": upstreams.gemini.upstream.url, "api_key": "k"},
        },
        "models": {
            "claude-via-openai": {"deployments": [{"provider": "oai", "model": "up-model"}]},
            "claude-via-anthropic": {"deployments": [{"provider": "claude", "model": "claude-x"}]},
            "claude-via-gemini": {"deployments": [{"provider": "gem", "model": "gemini-x"}]},
            # its own deployment: the 429 it gets puts only this one in cooldown
            "claude-flaky": {"deployments": [{"provider": "oai", "model": "flaky"}]},
        },
    }
    config["server"] = {"keepalive_s": 0.3}  # pings soon, for the slow upstream below
    server: ServerProcess = start_server(
        tmp_path_factory.mktemp("anthropic-gateway"), json.dumps(config)
    )
    yield server.url
    assert server.stop() == 0, server.log.read_text()[-3000:]


@pytest.fixture
def client(gateway: str, upstreams: Upstreams) -> Iterator[anthropic.Anthropic]:
    upstreams.reset()
    with anthropic.Anthropic(base_url=gateway, api_key="unused", max_retries=0) as sdk:
        yield sdk


@pytest.mark.parametrize("model", MODELS)
def test_messages_create(client: anthropic.Anthropic, model: str) -> None:
    message = client.messages.create(model=model, max_tokens=64, messages=HI, system="Be brief.")
    assert message.type == "message"
    # through to Anthropic the answer is Anthropic's own, its model name included
    assert message.model == ("claude-test-1" if model == "claude-via-anthropic" else model)
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text"
    assert message.content[0].text in ("Hello from openai", "Hello there, world!", "Hello world")
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_messages_stream(client: anthropic.Anthropic, gateway: str, model: str) -> None:
    with client.messages.stream(model=model, max_tokens=64, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text in ("Hello from openai", "Hello there, world!", "Hello world")
    assert final.content[0].type == "text"
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    body = {"model": model, "max_tokens": 64, "messages": HI, "stream": True}
    raw = httpx.post(f"{gateway}/v1/messages?beta=true", json=body, timeout=10)
    assert raw.status_code == 200
    assert read_stream(raw.content).message["content"][0]["text"] == text


def test_tool_round_trip_through_an_openai_upstream(
    client: anthropic.Anthropic, upstreams: Upstreams
) -> None:
    question = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.messages.create(
        model="claude-via-openai", max_tokens=64, messages=question, tools=[WEATHER]
    )
    assert first.stop_reason == "tool_use"
    (use,) = [block for block in first.content if block.type == "tool_use"]
    assert use.name == "get_weather"
    assert use.input == {"city": "Paris"}
    history = [
        *question,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C, sunny"}],
        },
    ]
    with client.messages.stream(
        model="claude-via-openai", max_tokens=64, messages=history, tools=[WEATHER]
    ) as stream:
        second = stream.get_final_message()
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"
    assert second.content[0].text == "Hello from openai"
    sent = upstreams.openai.observed.requests[-1]
    assert sent["messages"][-2]["tool_calls"][0]["id"] == use.id
    assert sent["messages"][-1] == {
        "role": "tool",
        "tool_call_id": use.id,
        "content": "18 C, sunny",
    }
    assert sent["tools"][0]["function"]["name"] == "get_weather"


def test_streamed_tool_call_and_thinking(client: anthropic.Anthropic, gateway: str) -> None:
    with client.messages.stream(
        model="claude-via-openai",
        max_tokens=64,
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[WEATHER],
        tool_choice={"type": "any"},
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in events
    assert final.stop_reason == "tool_use"
    assert final.content[-1].type == "tool_use"
    assert final.content[-1].input == {"city": "Paris"}


def test_tool_use_through_an_anthropic_upstream(
    client: anthropic.Anthropic, upstreams: Upstreams
) -> None:
    upstreams.claude.reply = TOOL_REPLY
    upstreams.claude.stop_reason = "tool_use"
    with client.messages.stream(
        model="claude-via-anthropic", max_tokens=64, messages=HI, tools=[WEATHER]
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert final.content[1].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"


def test_count_tokens(client: anthropic.Anthropic, upstreams: Upstreams) -> None:
    short = client.messages.count_tokens(model="claude-via-openai", messages=HI)
    long = client.messages.count_tokens(
        model="claude-via-anthropic",
        messages=[{"role": "user", "content": "word " * 1000}],
        tools=[WEATHER],
    )
    assert 0 < short.input_tokens < 20
    assert long.input_tokens > 1000
    assert upstreams.openai.observed.requests == []  # answered by the gateway alone
    assert upstreams.claude.observed.requests == []


def test_errors_reach_the_sdk_as_its_exceptions(
    client: anthropic.Anthropic, upstreams: Upstreams
) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="claude-nothing", max_tokens=8, messages=HI)
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="claude-via-openai", max_tokens=8, messages=[])
    assert "messages" in bad.value.message
    upstreams.openai.faults.status = 429
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model="claude-flaky", max_tokens=8, messages=HI)
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_models_list_through_the_sdk(client: anthropic.Anthropic) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids[:4] == [*MODELS, "claude-flaky"]
    assert client.models.retrieve("claude-via-gemini").display_name == "claude-via-gemini"


CLAUDE_CODE_LIKE = {
    "model": "claude-via-anthropic",
    "max_tokens": 32000,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    "thinking": {"type": "adaptive"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "output_config": {"effort": "high"},
    "metadata": {"user_id": "u-1"},
}
BETA_HEADERS = {
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,context-management-2025-06-27",
}


def test_an_anthropic_upstream_gets_the_request_as_written(
    gateway: str, upstreams: Upstreams
) -> None:
    upstreams.claude.reset()
    response = httpx.post(
        f"{gateway}/v1/messages?beta=true", json=CLAUDE_CODE_LIKE, headers=BETA_HEADERS, timeout=10
    )
    assert response.status_code == 200
    assert response.json() == upstreams.claude.message()  # the answer as Anthropic wrote it
    sent = upstreams.claude.observed.requests[0]
    assert sent == {**CLAUDE_CODE_LIKE, "model": "claude-x"}  # every field, unknown ones too
    headers = upstreams.claude.observed.headers[0]
    assert headers["anthropic-beta"] == BETA_HEADERS["anthropic-beta"]
    assert headers["anthropic-version"] == "2023-06-01"


def test_an_anthropic_upstreams_stream_comes_back_as_it_was(
    gateway: str, upstreams: Upstreams
) -> None:
    upstreams.claude.reset()
    upstreams.claude.reply = TOOL_REPLY
    upstreams.claude.stop_reason = "tool_use"
    body = {**CLAUDE_CODE_LIKE, "stream": True}
    response = httpx.post(f"{gateway}/v1/messages", json=body, headers=BETA_HEADERS, timeout=10)
    assert response.status_code == 200
    sent = [data for _, data in frames(response.content)]
    assert sent == list(upstreams.claude.events())  # ping and message_start included
    read = read_stream(response.content)  # the strict reader: order, blocks, deltas
    assert read.message["stop_reason"] == "tool_use"
    assert upstreams.claude.observed.headers[0]["anthropic-beta"] == BETA_HEADERS["anthropic-beta"]
    assert upstreams.claude.observed.requests[0]["stream"] is True


def test_a_slow_anthropic_upstream_is_kept_alive_with_one_message_start(
    gateway: str, upstreams: Upstreams
) -> None:
    upstreams.claude.reset()
    upstreams.claude.upstream.faults.hang_before_first_byte = 1.0
    body = {**CLAUDE_CODE_LIKE, "stream": True}
    response = httpx.post(f"{gateway}/v1/messages", json=body, headers=BETA_HEADERS, timeout=10)
    read = read_stream(response.content)
    types = [event["type"] for event in read.events]
    assert types.count("message_start") == 1  # ours, sent at once; the upstream's is left out
    assert types[1] == "ping"
    assert types.count("ping") >= 3  # ours every 0.3 s, and the upstream's own
    assert read.message["content"] == upstreams.claude.message()["content"]
    assert types[-1] == "message_stop"


def test_an_anthropic_error_event_after_output_ends_the_stream_in_anthropics_words(
    gateway: str, upstreams: Upstreams
) -> None:
    upstreams.claude.reset()
    upstreams.claude.error_after = 4  # after the first text delta
    body = {**CLAUDE_CODE_LIKE, "stream": True}
    response = httpx.post(f"{gateway}/v1/messages", json=body, headers=BETA_HEADERS, timeout=10)
    read = read_stream(response.content)
    assert read.error is not None
    assert read.error["type"] == "overloaded_error"
