"""The shared context of a local model: a request the engine ended because the context filled
up runs again alone (engine/context_gate.py), over a fake ``xllamacpp.Server``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from interference.engine.context_gate import ContextGate
from interference.engine.llama import EngineSettings, LlamaEngine, engine_error
from interference.errors import ContextFullError, ContextLengthExceededError

FULL = orjson.dumps(
    {"error": {"code": 500, "type": "server_error", "message": "Context size has been exceeded."}}
)
DONE = orjson.dumps({"id": "x", "object": "chat.completion", "created": 1, "choices": []})
CHUNK = orjson.dumps({"id": "x", "object": "chat.completion.chunk", "created": 1, "choices": []})
ROLE = {"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}
TEXT = {"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}


def chunk(choice: dict[str, object]) -> bytes:
    return orjson.dumps(
        {"id": "x", "object": "chat.completion.chunk", "created": 1, "choices": [choice]}
    )


class FillingServer:
    """Answers "context full" while more than ``room`` calls run at once, else ``answer``;
    records how many ran together at most. The calls wait for each other at a barrier so that
    they are in flight together, as in a real engine."""

    def __init__(self, room: int, together: int, before_full: list[bytes] | None = None) -> None:
        self.room = room
        self.before_full = before_full or []
        self.running = 0
        self.calls = 0
        self.most = 0
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(together, timeout=5)

    def handle_chat_completions(self, body: bytes, callback: Callable[[bytes], bool]) -> None:
        streaming = orjson.loads(body)["stream"]
        with self.lock:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
            first_round = self.calls <= self.barrier.parties
        released = False
        try:
            if first_round:
                self.barrier.wait()
            with self.lock:
                full = self.running > self.room
            if first_round:
                self.barrier.wait()  # everyone has looked before anyone leaves
            if full:
                for early in self.before_full:
                    callback(early)
                with self.lock:  # llama.cpp frees the slots it ended before it says so
                    self.running -= 1
                    released = True
                callback(FULL)
            elif streaming:
                callback(chunk(ROLE))
                callback(chunk(TEXT))
            else:
                callback(DONE)
        finally:
            if not released:
                with self.lock:
                    self.running -= 1


def engine_with(server: FillingServer) -> LlamaEngine:
    engine = LlamaEngine(EngineSettings(path=Path("model.gguf"), context=4096))
    engine._server = server
    return engine


def test_the_engines_message_reads_as_context_full() -> None:
    error = engine_error(orjson.loads(FULL)["error"], 4096)
    assert isinstance(error, ContextFullError)
    assert error.status == 503
    assert error.code == "context_full"
    assert "which its slots share, filled up" in error.message


@pytest.mark.parametrize("streaming", [False, True])
def test_requests_the_context_could_not_hold_together_run_again_alone(streaming: bool) -> None:
    server = FillingServer(room=1, together=3)
    engine = engine_with(server)

    async def one() -> object:
        if streaming:
            return [chunk async for chunk in engine.stream_chat({"messages": []})]
        return await engine.complete_chat({"messages": []})

    async def run() -> list[object]:
        return await asyncio.gather(*(one() for _ in range(3)))

    try:
        results = asyncio.run(run())
    finally:
        engine.close()
    assert len(results) == 3
    assert all(results)
    assert server.calls == 6  # 3 together, each failed; then each alone
    assert engine.gate.shared_runs == 0
    assert not engine.gate.alone_run


def streams_of(server: FillingServer, count: int) -> list[object]:
    engine = engine_with(server)

    async def one() -> list[dict[str, object]]:
        return [chunk async for chunk in engine.stream_chat({"messages": []})]

    async def run() -> list[object]:
        return await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)

    try:
        return asyncio.run(run())
    finally:
        engine.close()


def test_a_stream_that_sent_only_its_role_is_run_again_without_a_second_role() -> None:
    server = FillingServer(room=1, together=2, before_full=[chunk(ROLE)])
    results = streams_of(server, 2)
    assert server.calls == 4
    for result in results:
        assert isinstance(result, list)
        deltas = [c["choices"][0]["delta"] for c in result]  # type: ignore[index]
        assert deltas == [ROLE["delta"], TEXT["delta"]]


def test_a_stream_that_already_produced_is_not_run_again() -> None:
    server = FillingServer(room=1, together=2, before_full=[chunk(ROLE), chunk(TEXT)])
    results = streams_of(server, 2)
    assert [type(r) for r in results] == [ContextFullError, ContextFullError]
    assert server.calls == 2


def test_alone_waits_for_shared_runs_and_holds_new_ones_back() -> None:
    gate = ContextGate()
    order: list[str] = []

    async def shared(name: str, hold: float) -> None:
        async with gate.shared():
            order.append(f"{name} in")
            await asyncio.sleep(hold)
            order.append(f"{name} out")

    async def alone() -> None:
        async with gate.alone():
            order.append("alone in")
            assert gate.shared_runs == 0
            await asyncio.sleep(0.02)
            order.append("alone out")

    async def run() -> None:
        first = asyncio.create_task(shared("a", 0.05))
        await asyncio.sleep(0.01)
        solo = asyncio.create_task(alone())
        await asyncio.sleep(0.01)
        late = asyncio.create_task(shared("b", 0))
        await asyncio.gather(first, solo, late)

    asyncio.run(run())
    assert order == ["a in", "a out", "alone in", "alone out", "b in", "b out"]


def test_a_cancelled_alone_waiter_lets_shared_runs_go() -> None:
    gate = ContextGate()

    async def run() -> bool:
        async with gate.shared():
            waiter = asyncio.create_task(gate.alone().__aenter__())
            await asyncio.sleep(0.01)
            assert gate.alone_waiting == 1
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
            assert gate.alone_waiting == 0
            async with asyncio.timeout(1):
                async with gate.shared():
                    return True

    assert asyncio.run(run())


@pytest.mark.parametrize("streaming", [False, True])
def test_a_request_that_fills_the_context_even_alone_is_a_400(streaming: bool) -> None:
    engine = engine_with(FillingServer(room=0, together=1))

    async def run() -> object:
        if streaming:
            return [chunk async for chunk in engine.stream_chat({"messages": []})]
        return await engine.complete_chat({"messages": []})

    try:
        with pytest.raises(ContextLengthExceededError) as refused:
            asyncio.run(run())
    finally:
        engine.close()
    assert refused.value.status == 400
    assert refused.value.param == "max_tokens"
    assert "even with no other request running" in refused.value.message
