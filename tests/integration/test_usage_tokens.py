"""What a request costs, from what its upstream says of its tokens (a real HTTP upstream on
127.0.0.1): prompt tokens read from the upstream's cache are priced at ``cached_input`` and
counted in the ledger's ``cached_tokens``, streamed or not; a stream whose upstream sends no
usage is estimated (a token per chunk, 4 bytes of body per prompt token), not free."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from interference.api.app import create_app
from interference.config import Config
from interference.providers.anthropic_passthrough import PassedMessage, PassedMessageEvent
from interference.providers.responses_passthrough import PassedResponse, PassedResponseEvent
from tests.support.upstream import FakeUpstream

MASTER = "sk-master-tokens"
ADMIN = {"authorization": f"Bearer {MASTER}"}
USAGE = {"prompt_tokens": 1000, "completion_tokens": 10, "total_tokens": 1010,
         "prompt_tokens_details": {"cached_tokens": 800}}  # fmt: skip
# USD per 1M: 200 fresh x 1000 + 800 cached x 100 + 10 x 2000
COST = (200 * 1000 + 800 * 100 + 10 * 2000) / 1e6


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
    return f"data: {json.dumps(body)}\n\n".encode()


async def completions(request: Request) -> Response:
    body = await request.json()
    if not body.get("stream"):
        message = {"role": "assistant", "content": "cached answer"}
        choice = {"index": 0, "finish_reason": "stop", "logprobs": None, "message": message}
        return JSONResponse(
            {
                "id": "c",
                "object": "chat.completion",
                "created": 1,
                "model": "up",
                "choices": [choice],
                "usage": USAGE,
            }
        )
    silent = body["model"] == "silent"  # a server that never sends usage

    async def events() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": ""})
        for word in ["one", " two", " three", " four", " five"]:
            yield chunk({"content": word})
        yield chunk({}, "stop")
        if not silent and (body.get("stream_options") or {}).get("include_usage"):
            usage = {"id": "c", "object": "chat.completion.chunk", "created": 1,
                     "model": "up", "choices": [], "usage": USAGE}  # fmt: skip
            yield f"data: {json.dumps(usage)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@pytest.fixture
def client(tmp_path: Any) -> Iterator[TestClient]:
    upstream = FakeUpstream(Starlette(routes=[Route("/v1/chat/completions", completions,
                                                    methods=["POST"])])).start()  # fmt: skip
    config = Config.model_validate(
        {
            "server": {"master_key": MASTER},
            "storage": {"path": str(tmp_path / "u.db"), "refresh_s": 60},
            "providers": {"oai": {"kind": "openai", "base_url": f"{upstream.url}/v1"}},
            "models": {
                "cached": {"deployments": [{"provider": "oai", "model": "up"}]},
                "silent": {"deployments": [{"provider": "oai", "model": "silent"}]},
            },
            "prices": {
                "up": {"input": 1000, "output": 2000, "cached_input": 100},
                "silent": {"input": 1000, "output": 2000},
            },
            "openai_aliases": False,
        }
    )
    try:
        with TestClient(create_app(config), raise_server_exceptions=False) as test_client:
            yield test_client
    finally:
        upstream.stop()


def usage_of(client: TestClient, model: str) -> dict[str, Any]:
    rows = client.get("/usage", headers=ADMIN).json()["data"]
    found = [r for r in rows if r["model"] == model]
    assert len(found) == 1
    row: dict[str, Any] = found[0]
    return row


def test_cached_prompt_tokens_are_counted_and_priced_streamed_or_not(client: TestClient) -> None:
    ask = {"model": "cached", "messages": [{"role": "user", "content": "Hi"}]}
    whole = client.post("/v1/chat/completions", json=ask, headers=ADMIN)
    assert whole.status_code == 200
    assert whole.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 800
    streamed = client.post("/v1/chat/completions", json={**ask, "stream": True}, headers=ADMIN)
    assert streamed.status_code == 200
    row = usage_of(client, "cached")
    assert row["requests"] == 2
    assert row["prompt_tokens"] == 2000
    assert row["cached_tokens"] == 1600
    assert row["completion_tokens"] == 20
    assert row["cost"] == pytest.approx(2 * COST)


def test_a_stream_without_usage_is_estimated_not_free(client: TestClient) -> None:
    ask = {"model": "silent", "messages": [{"role": "user", "content": "x" * 400}], "stream": True}
    streamed = client.post("/v1/chat/completions", json=ask, headers=ADMIN)
    assert streamed.status_code == 200
    assert "five" in streamed.text
    row = usage_of(client, "silent")
    assert row["completion_tokens"] == 7  # the role chunk, five words, the finish
    body_bytes = len(json.dumps(ask, separators=(",", ":")))
    assert abs(row["prompt_tokens"] - body_bytes / 4) <= 10  # the client's JSON spacing aside
    assert row["cost"] == pytest.approx((row["prompt_tokens"] * 1000 + 7 * 2000) / 1e6)


def test_passed_through_answers_say_their_cached_tokens() -> None:
    usage = {"input_tokens": 20, "cache_read_input_tokens": 900,
             "cache_creation_input_tokens": 80, "output_tokens": 7}  # fmt: skip
    message = PassedMessage(
        json.dumps({"type": "message", "role": "assistant", "content": [],
                    "usage": usage}).encode(), "a",
    )  # fmt: skip
    assert message.token_counts() == (1000, 7)  # all of the prompt, cache reads and writes
    assert message.cached_tokens() == 900
    start = PassedMessageEvent(
        json.dumps({"type": "message_start", "message": {"usage": usage}}).encode(), "a"
    )
    assert (start.prompt_tokens(), start.cached_tokens()) == (1000, 900)
    text = PassedMessageEvent(json.dumps({"type": "content_block_delta"}).encode(), "a")
    assert (text.prompt_tokens(), text.cached_tokens()) == (None, None)

    response = {"object": "response", "usage": {"input_tokens": 500, "output_tokens": 3,
                "input_tokens_details": {"cached_tokens": 450}}}  # fmt: skip
    assert PassedResponse(json.dumps(response).encode(), "o").cached_tokens() == 450
    done = PassedResponseEvent(
        json.dumps({"type": "response.completed", "response": response}).encode(), "o"
    )
    assert (done.prompt_tokens(), done.cached_tokens()) == (500, 450)
