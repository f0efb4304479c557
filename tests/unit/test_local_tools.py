"""Grammar-constrained tool calling for local models without a native tool format."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import jsonschema
import orjson
import pytest
from pydantic import ValidationError

from interference.errors import InvalidRequestError
from interference.providers import local_tools
from interference.providers.base import collect_chunks
from interference.providers.tool_use import tool_use
from interference.wire.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    ResponseMessage,
)
from interference.wire.common import Usage

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


def request(**fields: Any) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER, TIME]}
    return ChatCompletionRequest.model_validate({**body, **fields})


def applied(req: ChatCompletionRequest) -> dict[str, Any]:
    payload = req.known_fields()
    payload["messages"] = [m.model_dump(exclude_none=True) for m in req.messages]
    tools = tool_use(req, "the test model")
    assert tools is not None
    local_tools.apply(req, payload, tools)
    return payload


def schema_of(payload: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = payload["response_format"]["json_schema"]["schema"]
    return schema


def test_auto_allows_a_call_or_an_answer() -> None:
    payload = applied(request())
    schema = schema_of(payload)
    jsonschema.validate(
        {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}, schema
    )
    jsonschema.validate({"response": "Hello"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"tool_calls": [{"name": "get_weather", "arguments": {}}]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"tool_calls": [{"name": "rm_rf", "arguments": {}}]}, schema)
    assert "tools" not in payload
    assert "tool_choice" not in payload
    system = payload["messages"][0]
    assert system["role"] == "system"
    assert "get_weather" in system["content"]
    assert '"response"' in system["content"]


def test_required_and_named_choices_force_a_call() -> None:
    schema = schema_of(applied(request(tool_choice="required")))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"response": "no"}, schema)
    named = schema_of(
        applied(request(tool_choice={"type": "function", "function": {"name": "get_time"}}))
    )
    jsonschema.validate({"tool_calls": [{"name": "get_time", "arguments": {}}]}, named)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"tool_calls": [{"name": "get_weather", "arguments": {"city": "x"}}]}, named
        )


def test_parallel_tool_calls_false_allows_one_call() -> None:
    schema = schema_of(applied(request(tool_choice="required", parallel_tool_calls=False)))
    call = {"name": "get_time", "arguments": {}}
    jsonschema.validate({"tool_calls": [call]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"tool_calls": [call, call]}, schema)


def test_allowed_tools_narrow_the_callable_functions() -> None:
    allowed = {"type": "function", "function": {"name": "get_time"}}
    choice = {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [allowed]}}
    payload = applied(request(tool_choice=choice))
    schema = schema_of(payload)
    jsonschema.validate({"tool_calls": [{"name": "get_time", "arguments": {}}]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"response": "no"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"tool_calls": [{"name": "get_weather", "arguments": {"city": "x"}}]}, schema
        )
    assert "get_weather" not in payload["messages"][0]["content"]


def test_bad_tool_choices() -> None:
    with pytest.raises(ValidationError) as invalid:
        request(tool_choice={"type": "function", "function": {"name": "nope"}})
    assert invalid.value.errors()[0]["loc"] == ("tool_choice",)
    with pytest.raises(InvalidRequestError) as info:
        applied(request(tools=[{"type": "custom", "custom": {"name": "x"}}]))
    assert info.value.param == "tools[0].type"
    assert info.value.code == "unsupported"


def test_history_is_written_in_the_json_dialect() -> None:
    payload = applied(
        request(
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather in Oslo?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'},
            ]
        )
    )
    messages = payload["messages"]
    assert messages[0]["content"].startswith("Be brief.\n\n")
    assert orjson.loads(messages[2]["content"]) == {
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]
    }
    assert messages[3] == {"role": "user", "content": 'Result of get_weather: {"temp": 3}'}


def completion(content: str, finish: str = "stop") -> ChatCompletion:
    return ChatCompletion(
        id="x",
        created=1,
        model="m",
        choices=[Choice(index=0, message=ResponseMessage(content=content), finish_reason=finish)],  # type: ignore[arg-type]
    )


def test_a_call_becomes_tool_calls() -> None:
    reply = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}'
    result = local_tools.translate_completion(completion(reply))
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "Oslo"}
    assert result.to_dict()["choices"][0]["message"]["tool_calls"][0]["type"] == "function"


def test_an_answer_becomes_content_and_truncation_stays_text() -> None:
    assert (
        local_tools.translate_completion(completion('{"response": "Hi!"}'))
        .choices[0]
        .message.content
        == "Hi!"
    )
    cut = local_tools.translate_completion(completion('{"tool_calls": [{"na', "length"))
    assert cut.choices[0].message.content == '{"tool_calls": [{"na'
    assert cut.choices[0].finish_reason == "length"


def test_stream_translation_matches_the_non_streamed_answer() -> None:
    calls = [
        {"name": "get_weather", "arguments": {"city": "Oslo"}},
        {"name": "get_time", "arguments": {}},
    ]
    reply = orjson.dumps({"tool_calls": calls}).decode()

    async def engine() -> AsyncGenerator[ChatCompletionChunk, None]:
        def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
            c = ChatCompletionChunk(id="x", created=1, model="m", choices=choices)
            if usage is not None:
                c.usage = usage
            return c

        yield chunk([ChunkChoice(index=0, delta=Delta(role="assistant", content=""))])
        for i in range(0, len(reply), 7):
            yield chunk([ChunkChoice(index=0, delta=Delta(content=reply[i : i + 7]))])
        yield chunk([ChunkChoice(index=0, delta=Delta(), finish_reason="stop")])
        yield chunk([], Usage(prompt_tokens=5, completion_tokens=9, total_tokens=14))

    async def run() -> tuple[list[ChatCompletionChunk], ChatCompletion]:
        chunks = [c async for c in local_tools.translate_stream(engine())]

        async def again() -> AsyncGenerator[ChatCompletionChunk, None]:
            for c in chunks:
                yield c

        return chunks, await collect_chunks(again())

    chunks, collected = asyncio.run(run())
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(not (c.choices and c.choices[0].delta.content) for c in chunks)  # no raw JSON
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["tool_calls"]
    assert chunks[-1].usage is not None
    calls = collected.choices[0].message.tool_calls
    assert calls is not None
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert all("usage" not in c.to_dict() for c in chunks[:-1])
