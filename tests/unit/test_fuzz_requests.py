"""Property-based fuzzing of the request routes through the in-process app over a fake provider
(the strategies and checks: ``tests/support/fuzzing.py``): no 5xx, every 200 valid against the spec,
every 4xx a valid ``ErrorResponse``. Sized to keep the module to a few tens of seconds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import strategies as st
from starlette.testclient import TestClient

from interference.api.app import create_app
from interference.config import Config, LimitsConfig, ServerConfig
from interference.providers.base import Provider
from tests.support.fakes import ServingFake
from tests.support.fuzzing import (
    COMPLETIONS,
    EMBEDDINGS,
    completion_requests,
    embedding_requests,
    fuzz_arbitrary_json,
    fuzz_chat,
    fuzz_raw_bytes,
    fuzz_route,
    report,
    valid_chat,
)

# Small enough that fuzzed requests breach them now and then, large enough for valid ones.
LIMITS = LimitsConfig(max_messages=6, max_input_chars=400, max_tokens=2048)
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    providers: list[Provider] = [ServingFake()]
    config = Config(server=ServerConfig(max_body_bytes=MAX_BODY, limits=LIMITS))
    with TestClient(create_app(config, providers=providers), raise_server_exceptions=False) as c:
        yield c


def test_fuzzed_chat_requests(client: TestClient) -> None:
    statuses = fuzz_chat(client, valid_chat(LIMITS.max_tokens), 1000)
    assert report("chat (fuzzed fields)", statuses) >= 0.25
    assert statuses["200-stream"] >= 50  # streams are fuzzed too


def test_arbitrary_json_bodies(client: TestClient) -> None:
    report("chat (arbitrary JSON)", fuzz_arbitrary_json(client, 150))


def test_raw_and_corrupted_bytes(client: TestClient) -> None:
    report("chat (raw bytes)", fuzz_raw_bytes(client, valid_chat(LIMITS.max_tokens), 250))


@pytest.mark.parametrize(
    ("path", "strategy", "schema", "stream_schema"),
    [
        pytest.param(
            COMPLETIONS,
            completion_requests(LIMITS.max_tokens),
            "CreateCompletionResponse",
            "CreateCompletionResponse",
            id="completions",
        ),
        pytest.param(
            EMBEDDINGS, embedding_requests(), "CreateEmbeddingResponse", None, id="embeddings"
        ),
    ],
)
def test_fuzzed_completion_and_embedding_requests(
    client: TestClient,
    path: str,
    strategy: st.SearchStrategy[object],
    schema: str,
    stream_schema: str | None,
) -> None:
    statuses = fuzz_route(client, path, strategy, schema, stream_schema, 200)
    assert report(path, statuses) >= 0.2
    if stream_schema is not None:
        assert statuses["200-stream"] >= 10
