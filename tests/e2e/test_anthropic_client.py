"""The official ``anthropic`` SDK against the real server and its embedded model, under the
model names Claude Code sends: messages, streams (read by the strict reader too), a forced tool
call and its result, count_tokens, and a prompt too long for the context in Claude Code's words."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.support.anthropic_stream import read_stream
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e

MODEL = "claude-sonnet-4-5-20250929"
HELLO = [{"role": "user", "content": "Say hello."}]
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


def sdk(server: ServerProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture
def client(server: ServerProcess) -> Iterator[anthropic.Anthropic]:
    with sdk(server) as anthropic_client:
        yield anthropic_client


def test_messages_create(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL, max_tokens=32000, system="You are friendly.", messages=HELLO
    )
    assert message.model == MODEL
    assert message.id.startswith("msg_")
    assert message.content[0].type == "text"
    assert message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 5
    assert message.usage.output_tokens > 0


def test_max_tokens_ends_the_answer_as_max_tokens(client: anthropic.Anthropic) -> None:
    story = [{"role": "user", "content": "Tell me a long story about a dragon."}]
    message = client.messages.create(model=MODEL, max_tokens=5, messages=story)
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5


def test_messages_stream(client: anthropic.Anthropic, http: httpx.Client) -> None:
    with client.messages.stream(model=MODEL, max_tokens=30, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip()
    assert final.content[0].type == "text"
    assert final.content[0].text == text
    assert final.usage.output_tokens > 0
    assert final.usage.input_tokens > 5  # from message_delta: message_start cannot know it
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 30, "messages": HELLO, "stream": True}
    raw = http.post("/v1/messages?beta=true", json=body)
    assert raw.status_code == 200
    result = read_stream(raw.content)
    assert result.error is None
    assert result.message["content"][0]["text"].strip()


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_a_forced_tool_call_and_its_result(client: anthropic.Anthropic, stream: bool) -> None:
    question: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    options: dict[str, Any] = {"model": MODEL, "max_tokens": 100, "tools": [WEATHER]}
    choice: Any = {"type": "any", "disable_parallel_tool_use": True}
    if stream:
        with client.messages.stream(messages=question, tool_choice=choice, **options) as events:
            first = events.get_final_message()
    else:
        first = client.messages.create(messages=question, tool_choice=choice, **options)
    assert first.stop_reason == "tool_use"
    uses = [block for block in first.content if block.type == "tool_use"]
    assert len(uses) == 1
    assert uses[0].name == "get_weather"
    assert isinstance(uses[0].input, dict)
    assert isinstance(uses[0].input["city"], str)
    history = [
        *question,
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": uses[0].id, "content": "18 C, cloudy"}
            ],
        },
    ]
    final = client.messages.create(messages=history, tool_choice={"type": "none"}, **options)
    assert final.content[0].type == "text"
    assert final.content[0].text.strip()
    assert final.stop_reason in ("end_turn", "max_tokens")


def test_count_tokens(client: anthropic.Anthropic) -> None:
    short = client.messages.count_tokens(model=MODEL, messages=HELLO)
    longer = client.messages.count_tokens(
        model=MODEL, messages=HELLO, system="x " * 2000, tools=[WEATHER]
    )
    assert 0 < short.input_tokens < 20
    assert longer.input_tokens > short.input_tokens + 900


def test_a_prompt_too_long_is_the_error_claude_code_compacts_on(
    small_server: ServerProcess,
) -> None:
    with sdk(small_server) as client, pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "word " * 600}]
        )
    assert refused.value.status_code == 400
    body: Any = refused.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    found = re.fullmatch(
        r"prompt is too long: (\d+) tokens > (\d+) maximum", body["error"]["message"]
    )
    assert found is not None, body
    assert int(found.group(1)) > int(found.group(2)) == 256
