"""The ``anthropic`` provider against a fake Messages API over real HTTP on 127.0.0.1.

The fake speaks Anthropic's wire format (a ``message`` object, or the SSE event sequence
``message_start``, ``content_block_*``, ``message_delta``, ``message_stop``), checks the rules
the real API enforces on requests, records what it received and honours ``upstream.faults``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest

from interference.config import RemoteProviderConfig
from interference.errors import (
    InterferenceError,
    InvalidRequestError,
    RateLimitError,
    UpstreamError,
    UpstreamOverloadedError,
)
from interference.providers.anthropic import AnthropicProvider
from interference.providers.base import collect_chunks
from interference.wire.chat import ChatCompletionChunk, ChatCompletionRequest
from tests.support.anthropic_fake import TEXT_REPLY, TOOL_REPLY, FakeAnthropic
from tests.support.upstream import refused_url

pytestmark = pytest.mark.timeout(15)

T = TypeVar("T")


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic()
    with fake.upstream:
        yield fake


@pytest.fixture
def fake(shared_fake: FakeAnthropic) -> FakeAnthropic:
    shared_fake.reset()
    return shared_fake


@asynccontextmanager
async def provider_at(url: str) -> AsyncIterator[AnthropicProvider]:
    config = RemoteProviderConfig(kind="anthropic", base_url=url, api_key="test-key")
    provider = AnthropicProvider("claude", config)
    await provider.start()
    try:
        yield provider
    finally:
        await provider.aclose()


def drive(url: str, work: Callable[[AnthropicProvider], Awaitable[T]]) -> T:
    """Run ``work`` against a started provider, in a fresh event loop, bounded in time."""

    async def main() -> T:
        async with provider_at(url) as provider:
            return await asyncio.wait_for(work(provider), 5)

    return asyncio.run(main())


def chat_request(**fields: Any) -> ChatCompletionRequest:
    fields.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return ChatCompletionRequest.model_validate({"model": "claude", **fields})


def chat(fake: FakeAnthropic, request: ChatCompletionRequest) -> dict[str, Any]:
    async def work(provider: AnthropicProvider) -> dict[str, Any]:
        return (await provider.chat(request, "claude-test-1")).to_dict()

    return drive(fake.upstream.url, work)


def stream(fake: FakeAnthropic, request: ChatCompletionRequest) -> list[dict[str, Any]]:
    async def work(provider: AnthropicProvider) -> list[dict[str, Any]]:
        return [c.to_dict() async for c in provider.stream_chat(request, "claude-test-1")]

    return drive(fake.upstream.url, work)


def stream_until_error(
    fake: FakeAnthropic, request: ChatCompletionRequest
) -> tuple[list[ChatCompletionChunk], InterferenceError]:
    async def work(provider: AnthropicProvider) -> tuple[list[ChatCompletionChunk], Any]:
        chunks: list[ChatCompletionChunk] = []
        try:
            async for chunk in provider.stream_chat(request, "claude-test-1"):
                chunks.append(chunk)
        except InterferenceError as exc:
            return chunks, exc
        raise AssertionError("the stream ended without an error")

    return drive(fake.upstream.url, work)


# --- request translation -------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_request_translation(fake: FakeAnthropic) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "user", "content": [{"type": "text", "text": "And the time?"}]},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "t", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "9h"}]},
        {"role": "user", "content": "Thanks"},
    ]
    request = chat_request(
        messages=messages,
        temperature=1.5,
        top_p=0.9,
        top_k=40,
        stop="END",
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        user="user-42",
        presence_penalty=1.0,
        seed=7,
    )
    chat(fake, request)

    assert fake.observed.requests == [
        {
            "model": "claude-test-1",
            "max_tokens": 4096,
            "system": "Be brief.\n\nAnswer in French.",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Weather in Paris?"},
                        {"type": "text", "text": "And the time?"},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "call_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                        {"type": "tool_use", "id": "call_2", "name": "t", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                        {"type": "tool_result", "tool_use_id": "call_2", "content": "9h"},
                        {"type": "text", "text": "Thanks"},
                    ],
                },
            ],
            "temperature": 1.0,
            "top_p": 0.9,
            "top_k": 40,
            "stop_sequences": ["END"],
            "tools": [
                {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "input_schema": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                    },
                }
            ],
            "tool_choice": {"type": "tool", "name": "get_weather"},
            "metadata": {"user_id": "user-42"},
        }
    ]
    headers = fake.observed.headers[0]
    assert headers["x-api-key"] == "test-key"
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["content-type"] == "application/json"
    assert "authorization" not in headers
    assert fake.paths == ["/v1/messages"]


def test_token_limit_stop_list_and_stream_flag(fake: FakeAnthropic) -> None:
    chat(fake, chat_request(max_tokens=50, stop=["a", "b"]))
    chat(fake, chat_request(max_completion_tokens=70, max_tokens=50))
    stream(fake, chat_request())
    first, second, third = fake.observed.requests
    assert (first["max_tokens"], first["stop_sequences"]) == (50, ["a", "b"])
    assert "stream" not in first
    assert second["max_tokens"] == 70
    assert third["stream"] is True
    assert fake.observed.headers[2]["accept"] == "text/event-stream"


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (None, None, None),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice(
    fake: FakeAnthropic, tool_choice: str | None, parallel: bool | None, expected: Any
) -> None:
    fields: dict[str, Any] = {"tools": [WEATHER_TOOL]}
    if tool_choice is not None:
        fields["tool_choice"] = tool_choice
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    chat(fake, chat_request(**fields))
    assert fake.observed.requests[0].get("tool_choice") == expected


def test_images(fake: FakeAnthropic) -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    chat(fake, chat_request(messages=[{"role": "user", "content": content}]))
    assert fake.observed.requests[0]["messages"][0]["content"][1:] == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"messages": [{"role": "system", "content": "alone"}]}, "messages"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0]"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,x"}}
                        ],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}
                        ],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
    ],
)
def test_untranslatable_requests_are_refused_before_any_request(
    fake: FakeAnthropic, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        chat(fake, chat_request(**fields))
    assert caught.value.param == param
    assert not caught.value.retryable
    with pytest.raises(InvalidRequestError):
        stream(fake, chat_request(**fields))
    assert fake.observed.requests == []


def test_base_url_ending_in_v1(fake: FakeAnthropic) -> None:
    async def work(provider: AnthropicProvider) -> None:
        await provider.chat(chat_request(), "claude-test-1")

    drive(fake.upstream.url + "/v1", work)
    assert fake.paths == ["/v1/messages"]


# --- answers -------------------------------------------------------------------------------


def test_non_stream_text(fake: FakeAnthropic) -> None:
    fake.usage = {
        "input_tokens": 10,
        "output_tokens": 7,
        "cache_read_input_tokens": 5,
        "cache_creation_input_tokens": 2,
    }
    result = chat(fake, chat_request())
    assert result["id"] == "msg_01abc"
    assert result["object"] == "chat.completion"
    assert result["model"] == "claude-test-1"
    assert abs(result["created"] - time.time()) < 60
    assert result["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there, world!", "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert result["usage"] == {
        "prompt_tokens": 17,
        "completion_tokens": 7,
        "total_tokens": 24,
        "prompt_tokens_details": {"cached_tokens": 5},
    }


def test_non_stream_tool_use(fake: FakeAnthropic) -> None:
    fake.reply, fake.stop_reason = TOOL_REPLY[1:], "tool_use"
    message = chat(fake, chat_request(tools=[WEATHER_TOOL]))["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    assert message["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "id": "toolu_01",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            },
            {
                "id": "toolu_02",
                "type": "function",
                "function": {"name": "get_time", "arguments": '{"tz":"CET"}'},
            },
        ],
    }


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons(fake: FakeAnthropic, stop_reason: str, finish_reason: str) -> None:
    fake.stop_reason = stop_reason
    assert chat(fake, chat_request())["choices"][0]["finish_reason"] == finish_reason
    assert stream(fake, chat_request())[-2]["choices"][0]["finish_reason"] == finish_reason


def test_stream_chunks(fake: FakeAnthropic) -> None:
    fake.reply, fake.stop_reason = TOOL_REPLY, "tool_use"
    fake.usage = {"input_tokens": 20, "output_tokens": 30, "cache_read_input_tokens": 4}
    chunks = stream(fake, chat_request(tools=[WEATHER_TOOL]))

    assert {(c["id"], c["model"], c["object"]) for c in chunks} == {
        ("msg_01abc", "claude-test-1", "chat.completion.chunk")
    }
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Let"},
        {"content": " me"},
        {"content": " check."},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_01",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"cit'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": 'y":"Paris"}'}}]},
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "toolu_02",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 1, "function": {"arguments": '{"tz"'}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": ':"CET"}'}}]},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * 10 + ["tool_calls"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 24,
        "completion_tokens": 30,
        "total_tokens": 54,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    assert fake.observed.completed_streams == 1


SERVER_TOOL_REPLY: list[dict[str, Any]] = [
    {"type": "thinking", "thinking": "Let me search.", "signature": "c2ln"},
    {
        "type": "server_tool_use",
        "id": "srvtoolu_01",
        "name": "web_search",
        "input": {"query": "weather paris"},
    },
    {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01", "content": []},
    *TOOL_REPLY,
]


def test_thinking_and_server_tool_blocks_are_dropped(fake: FakeAnthropic) -> None:
    fake.reply, fake.stop_reason = SERVER_TOOL_REPLY, "tool_use"
    message = chat(fake, chat_request(tools=[WEATHER_TOOL]))["choices"][0]["message"]
    assert message["content"] == "Let me check."
    assert [call["id"] for call in message["tool_calls"]] == ["toolu_01", "toolu_02"]
    deltas = [c["choices"][0]["delta"] for c in stream(fake, chat_request())[:-1]]
    assert [call["index"] for d in deltas for call in d.get("tool_calls", [])] == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize(
    ("reply", "stop_reason"),
    [(TEXT_REPLY, "end_turn"), (TOOL_REPLY, "tool_use"), (SERVER_TOOL_REPLY, "tool_use")],
)
def test_collected_stream_equals_non_stream(
    fake: FakeAnthropic, reply: list[dict[str, Any]], stop_reason: str
) -> None:
    fake.reply, fake.stop_reason = reply, stop_reason
    request = chat_request(tools=[WEATHER_TOOL])

    async def both(provider: AnthropicProvider) -> tuple[dict[str, Any], dict[str, Any]]:
        whole = await provider.chat(request, "claude-test-1")
        collected = await collect_chunks(provider.stream_chat(request, "claude-test-1"))
        return whole.to_dict(), collected.to_dict()

    whole, collected = drive(fake.upstream.url, both)
    whole.pop("created"), collected.pop("created")
    assert collected == whole


# --- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream"])
@pytest.mark.parametrize(
    ("status", "error", "retryable", "code"),
    [
        (400, InvalidRequestError, False, None),
        (429, RateLimitError, True, "rate_limit_exceeded"),
        (500, UpstreamError, True, "upstream_error"),
        (529, UpstreamError, True, "upstream_error"),
        (401, UpstreamError, True, "upstream_auth_error"),
    ],
)
def test_error_statuses(
    fake: FakeAnthropic,
    streamed: bool,
    status: int,
    error: type[InterferenceError],
    retryable: bool,
    code: str | None,
) -> None:
    fake.upstream.faults.status = status
    fake.upstream.faults.retry_after = "3" if status == 429 else None
    with pytest.raises(error) as caught:
        (stream if streamed else chat)(fake, chat_request())
    assert type(caught.value) is error
    assert caught.value.retryable is retryable
    assert caught.value.code == code
    assert "nope" in caught.value.message
    assert caught.value.retry_after == (3.0 if status == 429 else None)


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream"])
def test_malformed_json(fake: FakeAnthropic, streamed: bool) -> None:
    fake.upstream.faults.malformed = True
    with pytest.raises(UpstreamError, match="malformed") as caught:
        (stream if streamed else chat)(fake, chat_request())
    assert caught.value.retryable


def test_connection_refused() -> None:
    async def work(provider: AnthropicProvider) -> Any:
        return await provider.chat(chat_request(), "claude-test-1")

    with pytest.raises(UpstreamError, match="cannot connect"):
        drive(refused_url(), work)


def test_cut_stream_raises_from_the_generator(fake: FakeAnthropic) -> None:
    fake.upstream.faults.cut_after_chunks = 4
    chunks, error = stream_until_error(fake, chat_request())
    assert [c.choices[0].delta.content for c in chunks] == ["", "Hello"]
    assert isinstance(error, UpstreamError)
    assert error.retryable


@pytest.mark.parametrize(
    ("error_type", "error", "retryable"),
    [
        ("overloaded_error", UpstreamOverloadedError, True),
        ("api_error", UpstreamError, True),
        ("rate_limit_error", RateLimitError, True),
        ("invalid_request_error", InvalidRequestError, False),
    ],
)
def test_error_event_mid_stream(
    fake: FakeAnthropic, error_type: str, error: type[InterferenceError], retryable: bool
) -> None:
    fake.error_after, fake.error_type = 5, error_type
    chunks, raised = stream_until_error(fake, chat_request())
    assert [c.choices[0].delta.content for c in chunks] == ["", "Hello", " there,"]
    assert type(raised) is error
    assert raised.retryable is retryable
    assert error_type in raised.message


def wait_for_disconnect(fake: FakeAnthropic) -> None:
    deadline = time.monotonic() + 3
    while fake.observed.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.observed.disconnects == 1
    assert fake.observed.completed_streams == 0


def test_closing_the_stream_early_disconnects_upstream(fake: FakeAnthropic) -> None:
    fake.reply = [{"type": "text", "text": " ".join(["word"] * 200)}]
    fake.upstream.faults.chunk_delay = 0.02

    async def work(provider: AnthropicProvider) -> list[ChatCompletionChunk]:
        chunks = provider.stream_chat(chat_request(), "claude-test-1")
        taken = [await anext(chunks), await anext(chunks)]
        await chunks.aclose()
        return taken

    taken = drive(fake.upstream.url, work)
    assert [c.choices[0].delta.content for c in taken] == ["", "word"]
    wait_for_disconnect(fake)


def test_cancellation_propagates_and_disconnects_upstream(fake: FakeAnthropic) -> None:
    fake.reply = [{"type": "text", "text": " ".join(["word"] * 200)}]
    fake.upstream.faults.chunk_delay = 0.02

    async def work(provider: AnthropicProvider) -> None:
        async def consume() -> None:
            async for _ in provider.stream_chat(chat_request(), "claude-test-1"):
                pass

        with pytest.raises(TimeoutError):
            await asyncio.wait_for(consume(), 0.3)

    drive(fake.upstream.url, work)
    wait_for_disconnect(fake)


def test_cancellation_while_upstream_hangs(fake: FakeAnthropic) -> None:
    fake.upstream.faults.hang_before_first_byte = 0.5

    async def work(provider: AnthropicProvider) -> float:
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(provider.stream_chat(chat_request(), "m")), 0.1)
        return time.monotonic() - began

    assert drive(fake.upstream.url, work) < 0.4
