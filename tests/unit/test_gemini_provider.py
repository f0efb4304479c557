"""The gemini provider against a fake Gemini API on 127.0.0.1: real HTTP, the real wire format."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from interference.config import RemoteProviderConfig
from interference.errors import (
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    UpstreamError,
)
from interference.providers.base import collect_chunks
from interference.providers.gemini import GeminiProvider, gemini_body
from interference.wire.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from tests.support.gemini_fake import FakeGemini
from tests.support.upstream import FakeUpstream, refused_url

pytestmark = pytest.mark.timeout(10)

T = TypeVar("T")
FAKE = FakeGemini()


@pytest.fixture(scope="module")
def server() -> Iterator[FakeUpstream]:
    with FakeUpstream(FAKE.app()) as upstream:
        FAKE.upstream = upstream
        yield upstream


@pytest.fixture
def upstream(server: FakeUpstream) -> FakeUpstream:
    server.reset()
    FAKE.reset()
    return server


def run(coro: Coroutine[Any, Any, T], timeout: float = 5.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def request(**fields: Any) -> ChatCompletionRequest:
    body = {"model": "public", "messages": [{"role": "user", "content": "hi"}], **fields}
    return ChatCompletionRequest.model_validate(body)


def provider_for(url: str) -> GeminiProvider:
    config = RemoteProviderConfig(kind="gemini", base_url=url, api_key="test-key")
    return GeminiProvider("gemini:test", config)


async def _chat(url: str, chat: ChatCompletionRequest) -> ChatCompletion:
    provider = provider_for(url)
    await provider.start()
    try:
        return await provider.chat(chat, "gemini-2.5-flash")
    finally:
        await provider.aclose()


async def _stream(url: str, chat: ChatCompletionRequest) -> list[ChatCompletionChunk]:
    provider = provider_for(url)
    await provider.start()
    try:
        return [chunk async for chunk in provider.stream_chat(chat, "gemini-2.5-flash")]
    finally:
        await provider.aclose()


def chat(upstream: FakeUpstream, **fields: Any) -> ChatCompletion:
    return run(_chat(upstream.url, request(**fields)))


def stream(upstream: FakeUpstream, **fields: Any) -> list[ChatCompletionChunk]:
    return run(_stream(upstream.url, request(**fields)))


async def _collect(chunks: list[ChatCompletionChunk]) -> ChatCompletion:
    async def gen() -> Any:
        for chunk in chunks:
            yield chunk

    return await collect_chunks(gen())


def comparable(completion: ChatCompletion) -> dict[str, Any]:
    """The completion without what legitimately differs (creation time, generated call ids)."""
    data = completion.to_dict()
    data.pop("created")
    for choice in data["choices"]:
        for call in choice["message"].get("tool_calls") or ():
            assert call.pop("id").startswith("call_")
    return data


# --- request translation --------------------------------------------------------------------

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": WEATHER_PARAMETERS,
    },
}
CONVERSATION = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi"},
    {"role": "developer", "content": [{"type": "text", "text": "dev note"}]},
    {"role": "user", "content": [{"type": "text", "text": "weather and time?"}]},
    {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [
            {"id": "c1", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "c2", "function": {"name": "get_time", "arguments": ""}},
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21}'},
    {"role": "tool", "tool_call_id": "c2", "content": "noon"},
    {"role": "user", "content": "thanks"},
]


def test_request_translation_on_the_wire(upstream: FakeUpstream) -> None:
    chat(
        upstream,
        messages=CONVERSATION,
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        max_tokens=100,
        max_completion_tokens=64,
        stop="END",
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    [seen] = upstream.observed.requests
    assert seen["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert seen["query"] == ""
    assert upstream.observed.headers[0]["x-goog-api-key"] == "test-key"
    assert "authorization" not in upstream.observed.headers[0]
    body = seen["body"]
    assert body["systemInstruction"] == {"parts": [{"text": "be brief"}, {"text": "dev note"}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "hi"}, {"text": "weather and time?"}]},
        {
            "role": "model",
            "parts": [
                {"text": "Let me look."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                {"functionResponse": {"name": "get_time", "response": {"content": "noon"}}},
                {"text": "thanks"},
            ],
        },
    ]
    assert body["generationConfig"] == {
        "temperature": 0.5,
        "topP": 0.9,
        "topK": 40,
        "maxOutputTokens": 64,
        "stopSequences": ["END"],
        "seed": 7,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "responseMimeType": "application/json",
        "responseJsonSchema": {},
    }
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parametersJsonSchema": WEATHER_PARAMETERS,
                }
            ]
        }
    ]
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }


def test_stream_uses_alt_sse_and_keeps_the_key_out_of_the_url(upstream: FakeUpstream) -> None:
    stream(upstream)
    [seen] = upstream.observed.requests
    assert seen["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert seen["query"] == "alt=sse"
    assert "test-key" not in seen["path"] + seen["query"]
    assert upstream.observed.headers[0]["x-goog-api-key"] == "test-key"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
    ],
)
def test_tool_choice_modes(choice: str, expected: dict[str, Any]) -> None:
    body = gemini_body(request(tools=[WEATHER_TOOL], tool_choice=choice))
    assert body["toolConfig"] == {"functionCallingConfig": expected}


def test_small_translations() -> None:
    body = gemini_body(request(response_format={"type": "json_object"}, stop=["a", "b"], n=3))
    assert body["generationConfig"] == {
        "responseMimeType": "application/json",
        "stopSequences": ["a", "b"],
        "candidateCount": 3,
    }
    assert "systemInstruction" not in body
    assert "tools" not in body
    assert gemini_body(request(seed=2**40 + 5))["generationConfig"]["seed"] == 5
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    remote = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    audio = {"type": "input_audio", "input_audio": {"data": "BBBB", "format": "wav"}}
    message = {"role": "user", "content": [image, remote, audio]}
    assert gemini_body(request(messages=[message]))["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "BBBB"}},
    ]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}, "messages"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{"}}],
                    }
                ]
            },
            "messages",
        ),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
    ],
)
def test_untranslatable_requests_are_the_clients_fault(
    upstream: FakeUpstream, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        gemini_body(request(**fields))
    assert caught.value.param == param
    with pytest.raises(InvalidRequestError):
        stream(upstream, **fields)
    assert upstream.observed.requests == []  # nothing was sent


# --- non-streamed answers -------------------------------------------------------------------


def test_text_answer_round_trip(upstream: FakeUpstream) -> None:
    completion = chat(upstream)
    data = completion.to_dict()
    assert data["id"] == "chatcmpl-resp-123"
    assert data["object"] == "chat.completion"
    assert data["model"] == "gemini-fake-001"
    assert data["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello world", "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert data["usage"] == {
        "prompt_tokens": 11,
        "completion_tokens": 8,  # candidates + thoughts
        "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 4},
    }


def test_thoughts_are_not_part_of_the_answer(upstream: FakeUpstream) -> None:
    FAKE.candidates = [[{"text": "pondering...", "thought": True}, {"text": "42"}]]
    assert chat(upstream).choices[0].message.content == "42"


def test_function_call_answer(upstream: FakeUpstream) -> None:
    call = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    FAKE.candidates = [[call]]
    [choice] = chat(upstream, tools=[WEATHER_TOOL]).to_dict()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    assert message["refusal"] is None
    [tool_call] = message["tool_calls"]
    assert tool_call["id"].startswith("call_")
    assert tool_call["type"] == "function"
    assert tool_call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
    ],
)
def test_finish_reasons(upstream: FakeUpstream, reason: str, expected: str) -> None:
    FAKE.finish_reason = reason
    assert chat(upstream).choices[0].finish_reason == expected
    assert stream(upstream)[-2].choices[0].finish_reason == expected


def test_two_candidates(upstream: FakeUpstream) -> None:
    FAKE.candidates = [[{"text": "one"}], [{"text": "two"}, {"text": "!"}]]
    completion = chat(upstream, n=2)
    assert upstream.observed.requests[0]["body"]["generationConfig"] == {"candidateCount": 2}
    assert [(c.index, c.message.content) for c in completion.choices] == [(0, "one"), (1, "two!")]


def test_a_blocked_prompt_is_an_invalid_request(upstream: FakeUpstream) -> None:
    FAKE.block_reason = "PROHIBITED_CONTENT"
    for call in (chat, stream):
        with pytest.raises(InvalidRequestError) as caught:
            call(upstream)
        assert caught.value.code == "content_filter"
        assert not caught.value.retryable


# --- streamed answers -----------------------------------------------------------------------


def test_stream_chunk_sequence(upstream: FakeUpstream) -> None:
    chunks = stream(upstream)
    assert {(c.id, c.model) for c in chunks} == {("chatcmpl-resp-123", "gemini-fake-001")}
    assert [c.to_dict()["choices"] for c in chunks] == [
        [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}],
        [{"index": 0, "delta": {"content": " world"}, "finish_reason": None}],
        [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        [],
    ]
    assert chunks[-1].to_dict()["usage"]["prompt_tokens_details"] == {"cached_tokens": 4}
    assert all("usage" not in c.to_dict() for c in chunks[:-1])


def test_stream_tool_call_delta_is_whole(upstream: FakeUpstream) -> None:
    FAKE.candidates = [
        [
            {"text": "Checking."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "get_time", "args": {}}},
        ]
    ]
    chunks = stream(upstream, tools=[WEATHER_TOOL])
    calls = [c.to_dict()["choices"][0]["delta"] for c in chunks[2:4]]
    assert [d["tool_calls"][0]["index"] for d in calls] == [0, 1]
    first = calls[0]["tool_calls"][0]
    assert first["id"].startswith("call_")
    assert first["type"] == "function"
    assert first["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert chunks[-2].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("candidates", "n"),
    [
        ([[{"text": "Hello"}, {"text": " there"}, {"text": "!"}]], None),
        ([[{"text": "Sure."}, {"functionCall": {"name": "get_weather", "args": {"x": 1}}}]], None),
        ([[{"functionCall": {"name": "get_weather", "args": {}}}]], None),
        ([[{"text": "a"}, {"text": "b"}], [{"text": "c"}]], 2),
    ],
)
def test_collected_stream_equals_the_non_streamed_answer(
    upstream: FakeUpstream, candidates: list[list[dict[str, Any]]], n: int | None
) -> None:
    FAKE.candidates = candidates
    whole = chat(upstream, n=n)
    collected = run(_collect(stream(upstream, n=n)))
    assert comparable(collected) == comparable(whole)


# --- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "retryable", "code"),
    [
        (400, InvalidRequestError, False, None),
        (404, NotFoundError, False, "model_not_found"),
        (403, UpstreamError, True, "upstream_auth_error"),
        (500, UpstreamError, True, "upstream_error"),
        (503, UpstreamError, True, "upstream_error"),
    ],
)
def test_error_statuses(
    upstream: FakeUpstream, status: int, error: type[Exception], retryable: bool, code: str | None
) -> None:
    upstream.faults.status = status
    for call in (chat, stream):
        with pytest.raises(error) as caught:
            call(upstream)
        assert isinstance(caught.value, InvalidRequestError | NotFoundError | UpstreamError)
        assert caught.value.retryable is retryable
        assert caught.value.code == code
        assert f"fake failure {status}" in caught.value.message


def test_rate_limit_carries_retry_after(upstream: FakeUpstream) -> None:
    upstream.faults.status = 429
    upstream.faults.retry_after = "7"
    for call in (chat, stream):
        with pytest.raises(RateLimitError) as caught:
            call(upstream)
        assert caught.value.retry_after == 7.0
        assert caught.value.retryable


def test_malformed_json_is_an_upstream_error(upstream: FakeUpstream) -> None:
    upstream.faults.malformed = True
    for call in (chat, stream):
        with pytest.raises(UpstreamError, match="malformed"):
            call(upstream)


def test_a_cut_stream_raises_from_the_generator(upstream: FakeUpstream) -> None:
    upstream.faults.cut_after_chunks = 1
    received: list[ChatCompletionChunk] = []

    async def consume() -> None:
        provider = provider_for(upstream.url)
        await provider.start()
        try:
            async for chunk in provider.stream_chat(request(), "gemini-2.5-flash"):
                received.append(chunk)
        finally:
            await provider.aclose()

    with pytest.raises(UpstreamError) as caught:
        run(consume())
    assert caught.value.retryable
    assert [c.choices[0].delta.content for c in received] == ["", "Hello"]


def test_a_stream_without_finish_is_incomplete(upstream: FakeUpstream) -> None:
    FAKE.omit_finish = True
    with pytest.raises(UpstreamError, match="before its finish"):
        stream(upstream)


def test_an_error_event_inside_the_stream(upstream: FakeUpstream) -> None:
    FAKE.error_event = {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
    with pytest.raises(UpstreamError, match="overloaded") as caught:
        stream(upstream)
    assert caught.value.retryable


def test_a_base_url_naming_the_api_version(upstream: FakeUpstream) -> None:
    run(_chat(upstream.url + "/v1beta/", request()))
    [seen] = upstream.observed.requests
    assert seen["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"


def test_connection_refused_is_retryable() -> None:
    with pytest.raises(UpstreamError) as caught:
        run(_chat(refused_url(), request()))
    assert caught.value.retryable


def test_closing_the_stream_early_disconnects_upstream(upstream: FakeUpstream) -> None:
    FAKE.candidates = [[{"text": f"w{i} "} for i in range(50)]]
    upstream.faults.chunk_delay = 0.05

    async def read_two_then_close() -> None:
        provider = provider_for(upstream.url)
        await provider.start()
        try:
            chunks = provider.stream_chat(request(), "gemini-2.5-flash")
            assert (await anext(chunks)).choices[0].delta.role == "assistant"
            assert (await anext(chunks)).choices[0].delta.content == "w0 "
            await chunks.aclose()
            for _ in range(100):
                if upstream.observed.disconnects:
                    return
                await asyncio.sleep(0.02)
        finally:
            await provider.aclose()

    run(read_two_then_close())
    assert upstream.observed.disconnects == 1
    assert upstream.observed.completed_streams == 0


def test_cancellation_is_not_turned_into_an_upstream_error(upstream: FakeUpstream) -> None:
    upstream.faults.hang_before_first_byte = 1.0

    async def impatient() -> None:
        await asyncio.wait_for(_chat(upstream.url, request()), 0.2)

    with pytest.raises(TimeoutError):
        run(impatient())
