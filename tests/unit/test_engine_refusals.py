"""What the engine throws becomes a 400 when it is about the request, a 500 only for faults.

llama.cpp's request handlers raise (through Cython) while they read a request: ValueError for
std::invalid_argument, RuntimeError for nlohmann::json and parser errors. A fake stands in for
``xllamacpp.Server`` here; ``tests/e2e/test_bad_input_engine.py`` drives the real one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from interference.engine.llama import EngineSettings, LlamaEngine, refused_request
from interference.errors import InterferenceError, InvalidRequestError, ServerError

CHUNK = orjson.dumps({"id": "x", "object": "chat.completion.chunk", "created": 1, "choices": []})


class ThrowingServer:
    """Raises ``error`` from every handler, after delivering ``before`` chunks."""

    def __init__(self, error: BaseException, before: int = 0) -> None:
        self.error = error
        self.before = before

    def _handle(self, body: bytes, callback: Callable[[bytes], bool]) -> None:
        for _ in range(self.before):
            callback(CHUNK)
        raise self.error

    handle_chat_completions = _handle
    handle_completions = _handle

    def handle_embeddings(self, body: str) -> str:
        raise self.error


def engine_with(server: ThrowingServer) -> LlamaEngine:
    engine = LlamaEngine(EngineSettings(path=Path("model.gguf")))
    engine._server = server
    return engine


def outcome(server: ThrowingServer, call: str) -> InterferenceError:
    engine = engine_with(server)

    async def run() -> Any:
        if call == "stream":
            return [chunk async for chunk in engine.stream_chat({"messages": []})]
        if call == "embed":
            return await engine.embed({"input": "x"})
        return await getattr(engine, call)({"messages": []})

    try:
        with pytest.raises(InterferenceError) as raised:
            asyncio.run(run())
    finally:
        engine.close()
    return raised.value


REFUSALS = [
    ValueError('response_format type must be one of "text" or "json_object", but got: xml'),
    RuntimeError('Failed to parse tools: Missing tool function: {"type":"function"}; tools = [\n'),
    RuntimeError("[json.exception.type_error.302] type must be number, but is string"),
    IndexError("stoi"),
]


@pytest.mark.parametrize("call", ["complete_chat", "complete_text", "stream", "embed"])
@pytest.mark.parametrize("error", REFUSALS, ids=lambda e: type(e).__name__)
def test_an_exception_before_any_output_is_the_requests_fault(call: str, error: Exception) -> None:
    refused = outcome(ThrowingServer(error), call)
    assert isinstance(refused, InvalidRequestError)
    assert refused.status == 400
    first_line = str(error).splitlines()[0]
    assert refused.message == f"The model cannot take this request: {first_line}"


@pytest.mark.parametrize("call", ["complete_chat", "stream", "embed"])
def test_out_of_memory_stays_a_server_error(call: str) -> None:
    failed = outcome(ThrowingServer(MemoryError("std::bad_alloc")), call)
    assert isinstance(failed, ServerError)
    assert failed.status == 500


def test_an_exception_after_output_is_a_fault() -> None:
    failed = outcome(ThrowingServer(RuntimeError("slot lost"), before=2), "stream")
    assert isinstance(failed, ServerError)
    assert failed.status == 500


def test_long_engine_messages_are_cut() -> None:
    refused = refused_request(ValueError("x" * 5000 + "\nsecond line"), produced=False)
    assert refused.status == 400
    assert len(refused.message) < 500
    assert refused.message.endswith("...")
    assert "second line" not in refused.message
