"""Bounds of generation on the real engine: context, overflow, and slots freed on disconnect."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from interference.engine import resolve_model
from tests.support.server import ServerProcess, start_server, stream_then_disconnect
from tests.support.spec import validate

pytestmark = pytest.mark.e2e

NO_EOS = {"2": -100}


def test_without_max_tokens_generation_ends_at_the_context(small_server: ServerProcess) -> None:
    completion = small_server.client().chat.completions.create(
        model="gpt-4",
        messages=[{"role": "user", "content": "Count upwards forever."}],
        logit_bias=NO_EOS,
        timeout=120,
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    # the slot has 256 tokens: prompt + completion fill it
    assert 250 <= completion.usage.total_tokens <= 256


def test_context_overflow_is_400_context_length_exceeded(small_server: ServerProcess) -> None:
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "word " * 400}]}
    for stream in (False, True):
        response = httpx.post(
            f"{small_server.url}/v1/chat/completions", json={**body, "stream": stream}, timeout=60
        )
        assert response.status_code == 400
        error = response.json()
        validate(error, "ErrorResponse")
        assert error["error"]["code"] == "context_length_exceeded"
        assert error["error"]["type"] == "invalid_request_error"


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    running = start_server(
        tmp_path_factory.mktemp("one-slot"),
        "providers:\n  local: {kind: local, parallel: 1, context: 4096}\n",
    )
    yield running
    assert running.stop() == 0


def _first_token_seconds(url: str) -> float:
    started = time.perf_counter()
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=60
    ) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and '"content"' in line:
                return time.perf_counter() - started
    raise AssertionError("no token")


def test_client_disconnect_frees_the_slot(one_slot: ServerProcess) -> None:
    """With one slot, a second request waits for the first; a disconnect must end the first."""
    long_story = {
        "model": "gpt-4",
        "messages": [{"role": "user", "content": "Write a very long story."}],
        "logit_bias": NO_EOS,  # would run to the 4096-token context, tens of seconds
    }
    stream_then_disconnect(one_slot.url, long_story, until=b"data: ", count=5)
    # the connection is closed: the slot must be free again within about a second
    assert _first_token_seconds(one_slot.url) < 3.0
    assert "outcome=client_closed" in one_slot.log.read_text()


def test_any_gguf_path_is_served_under_its_file_name(tmp_path: Path) -> None:
    source = resolve_model("smollm2-135m-instruct").path
    copy = tmp_path / "My-Tiny-Model.Q4_1.gguf"
    copy.symlink_to(source)
    running = start_server(tmp_path, "{}\n", "--model", str(copy), "--parallel", "1")
    try:
        client = running.client()
        ids = [m.id for m in client.models.list()]
        assert ids[0] == "my-tiny-model.q4_1"
        assert "gpt-3.5-turbo" in ids
        reply = client.chat.completions.create(
            model="my-tiny-model.q4_1", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
        )
        assert reply.model == "my-tiny-model.q4_1"
        assert reply.choices[0].message.content
    finally:
        assert running.stop() == 0
