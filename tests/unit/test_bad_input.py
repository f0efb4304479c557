"""The bad-request corpus (``tests/support/bad_input.py``) through the in-process app over a fake
provider: every case is exactly its expected 4xx, never a 5xx; plus header bytes a client
library cannot send, driven through ASGI directly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from interference.api.app import create_app
from interference.config import Config, ServerConfig
from interference.wire.chat import ChatCompletionRequest
from tests.support.asgi import post_once
from tests.support.bad_input import (
    CASES,
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    JSON,
    LIMITS,
    MAX_BODY,
    OK_CHAT,
    Case,
    chat,
    check_refusal,
    completion,
    embedding,
    say,
    user,
)
from tests.support.fakes import ServingFake
from tests.support.spec import validate


def _params() -> list[Any]:
    return [pytest.param(case, id=case.name) for case in CASES]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    config = Config(server=ServerConfig(max_body_bytes=MAX_BODY, limits=LIMITS))
    app = create_app(config, providers=[ServingFake()])
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_the_corpus_is_wide() -> None:
    assert len(CASES) >= 45
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", _params())
def test_bad_input_is_a_clean_4xx(client: TestClient, case: Case) -> None:
    body = case.body() if callable(case.body) else case.body
    response = client.request(case.method, case.path, headers=case.headers, content=body)
    if callable(case.body):  # really sent chunked: the size is only known while reading
        assert "content-length" not in response.request.headers
    check_refusal(response, case)


def test_the_corpus_app_answers_valid_requests(client: TestClient) -> None:
    """The refusals above are the gateway's: the same routes accept a valid request."""
    for path, body, schema in [
        (CHAT, OK_CHAT, "CreateChatCompletionResponse"),
        (COMPLETIONS, completion(), "CreateCompletionResponse"),
        (EMBEDDINGS, embedding(input=["a", "b"]), "CreateEmbeddingResponse"),
        ("/chat/completions", chat(max_tokens=64, n=2, logit_bias={"7": 100}), None),
        (CHAT, say(*[{"role": "user", "content": "hi"}] * 4), None),
    ]:
        response = client.post(path, content=body, headers=JSON)
        assert response.status_code == 200, response.text
        if schema:
            validate(response.json(), schema)


def test_input_text_at_the_limit_is_accepted(client: TestClient) -> None:
    limit = LIMITS.max_input_chars
    response = client.post(CHAT, content=user("x" * limit), headers=JSON)
    assert response.status_code == 200, response.text


# --- header bytes the TestClient cannot send as they are: driven through ASGI directly

RAW_HEADER_CASES = [
    pytest.param(b"abc", {200}, id="content-length-letters"),
    pytest.param(b"9" * 30, {413}, id="content-length-huge"),
    pytest.param(
        b"\xb2",  # '²' once decoded as latin-1, which str.isdigit() calls a digit
        {200, 400},
        id="content-length-superscript-two",
    ),
]


@pytest.mark.parametrize(("content_length", "statuses"), RAW_HEADER_CASES)
def test_odd_content_length_headers_are_no_500(content_length: bytes, statuses: set[int]) -> None:
    app = create_app(Config(), providers=[ServingFake()])
    sent: list[dict[str, Any]] = []

    async def scenario() -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", content_length)]
        await post_once(app, CHAT, OK_CHAT, headers, sent, disconnect_after=5)

    asyncio.run(scenario())
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] in statuses, body
    headers = dict(start["headers"])
    assert headers.get(b"x-request-id")
    assert headers[b"content-type"] == b"application/json"
    if start["status"] != 200:
        validate(json.loads(body), "ErrorResponse")


def test_every_chat_field_has_a_case_naming_it() -> None:
    """Each top-level field of the chat request has at least one refusal naming it."""
    named = {
        str(case.param).split(".")[0].split("[")[0]
        for case in CASES
        if case.path == CHAT and isinstance(case.param, str)
    }
    fields = {
        "model", "messages", "temperature", "top_p", "n", "stream", "stop", "max_tokens",
        "max_completion_tokens", "presence_penalty", "frequency_penalty", "logit_bias",
        "logprobs", "top_logprobs", "seed", "user", "response_format", "tools", "tool_choice",
        "stream_options",
    }  # fmt: skip
    assert fields <= set(ChatCompletionRequest.model_fields)
    assert fields - named == set()
