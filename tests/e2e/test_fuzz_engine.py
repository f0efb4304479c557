"""The property-based fuzzing of ``tests/support/fuzzing.py`` against the real server and engine.

The same strategies as the in-process runs, fewer examples, each request asking for at most
:data:`MAX_TOKENS` tokens so that the valid ones (a third to a half) stay quick on two cores:
no 5xx, every 200 valid against the spec (streams chunk by chunk), every 4xx a valid
``ErrorResponse``, and nothing in the server's log that says an error escaped.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hypothesis import strategies as st

from tests.support.bad_input import serving_config
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
    valid_completion,
)
from tests.support.server import ServerProcess, start_server

pytestmark = pytest.mark.e2e

MAX_TOKENS = 12


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = serving_config(64 * 1024, 6, 400, MAX_TOKENS, slots=4)
    running = start_server(tmp_path_factory.mktemp("fuzz"), config)
    yield running
    assert running.stop() == 0, running.log.read_text()[-3000:]
    log = running.log.read_text()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
def http(fuzz_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_server.url, timeout=60) as client:
        yield client


def test_fuzzed_chat_requests(http: httpx.Client) -> None:
    statuses = fuzz_chat(http, valid_chat(MAX_TOKENS, bounded=True), 500)
    assert report("engine chat (fuzzed fields)", statuses) >= 0.2
    assert statuses["200-stream"] >= 25


def test_arbitrary_json_bodies(http: httpx.Client) -> None:
    report("engine chat (arbitrary JSON)", fuzz_arbitrary_json(http, 80))


def test_raw_and_corrupted_bytes(http: httpx.Client) -> None:
    report("engine chat (raw bytes)", fuzz_raw_bytes(http, valid_chat(MAX_TOKENS, True), 100))


@pytest.mark.parametrize(
    ("path", "strategy", "schema", "stream_schema"),
    [
        pytest.param(
            COMPLETIONS,
            completion_requests(MAX_TOKENS, bounded=True),
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
    http: httpx.Client,
    path: str,
    strategy: st.SearchStrategy[object],
    schema: str,
    stream_schema: str | None,
) -> None:
    statuses = fuzz_route(http, path, strategy, schema, stream_schema, 200)
    assert report(f"engine {path}", statuses) >= 0.15


def test_fuzzed_streamed_completions(http: httpx.Client) -> None:
    """Valid completion requests, every one streamed: how many of the fuzzed requests above
    ask for a stream depends on hypothesis's draws (3 to 25 of 200 across versions of the code),
    so the streams get a run of their own."""
    streamed = valid_completion(MAX_TOKENS, bounded=True).map(lambda body: {**body, "stream": True})
    schema = "CreateCompletionResponse"
    statuses = fuzz_route(http, COMPLETIONS, streamed, schema, schema, 40)
    report(f"engine {COMPLETIONS} (streamed)", statuses)
    assert statuses["200-stream"] >= 15
