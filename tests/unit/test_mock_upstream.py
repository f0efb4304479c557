"""Providers over :class:`~interference.upstream.mock.MockClient`: their translation tested
without a socket (the seam every HTTP provider has: ``client=``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from interference.config import RemoteProviderConfig
from interference.errors import RateLimitError, UpstreamError
from interference.providers.anthropic import AnthropicProvider
from interference.providers.openai import OpenAIProvider
from interference.upstream.mock import MockAnswer, MockClient, MockRequest
from interference.wire.chat import ChatCompletionRequest

REQUEST = ChatCompletionRequest.model_validate(
    {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}
)


def config(kind: str = "openai") -> RemoteProviderConfig:
    return RemoteProviderConfig(kind=kind, base_url="http://upstream.invalid/v1")  # type: ignore[arg-type]


def sse(*events: Any) -> list[bytes]:
    """Events as an SSE body cut into pieces that split lines and events."""
    raw = b"".join(
        (b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n")
        for e in events
    )
    return [raw[i : i + 7] for i in range(0, len(raw), 7)]


def chunk(content: str | None = None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "up",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def run(provider: Any, coroutine: Any) -> Any:
    async def go() -> Any:
        await provider.start()
        try:
            return await coroutine()
        finally:
            await provider.aclose()

    return asyncio.run(go())


def test_a_streamed_answer_in_pieces() -> None:
    client = MockClient(
        lambda _: MockAnswer(200, sse(chunk("Hel"), chunk("lo"), chunk(None, "stop"), b"[DONE]"))
    )
    provider = OpenAIProvider("up", config(), client=client)

    async def collect() -> str:
        return "".join(
            [c.choices[0].delta.content or "" async for c in provider.stream_chat(REQUEST, "up")]
        )

    assert run(provider, collect) == "Hello"
    [sent] = client.requests
    assert (sent.method, sent.path) == ("POST", "/chat/completions")
    body = sent.json()
    assert isinstance(body, dict)
    assert body["model"] == "up"
    assert body["stream"] is True
    assert body["temperature"] == 0.5
    assert client.closed  # aclose closed the given client too


def test_statuses_and_broken_connections_map_as_for_real_clients() -> None:
    limited = MockClient(
        lambda _: MockAnswer(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "3"})
    )
    provider = OpenAIProvider("up", config(), client=limited)
    with pytest.raises(RateLimitError, match="slow down") as raised:
        run(provider, lambda: provider.chat(REQUEST, "up"))
    assert raised.value.retry_after == 3

    def broken(request: MockRequest) -> MockAnswer:
        raise ConnectionResetError("reset by peer")

    provider = OpenAIProvider("up", config(), client=MockClient(broken))
    with pytest.raises(UpstreamError, match="connection failed \\(ConnectionResetError\\)"):
        run(provider, lambda: provider.chat(REQUEST, "up"))


def test_a_translating_provider_over_the_mock() -> None:
    """Anthropic's Messages API: the request translated, the answer translated back."""
    answer = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [{"type": "text", "text": "Hi there"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 4, "output_tokens": 2},
    }
    client = MockClient(lambda _: MockAnswer(200, json.dumps(answer).encode()))
    provider = AnthropicProvider("claude", config("anthropic"), client=client)
    reply = run(provider, lambda: provider.chat(REQUEST, "claude-x"))
    assert reply.choices[0].message.content == "Hi there"
    assert reply.choices[0].finish_reason == "stop"
    sent = client.requests[0].json()
    assert isinstance(sent, dict)
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert client.requests[0].path == "/messages"
