"""SSE framing, and cancellation of the event iterator when the client disconnects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from interference.api.sse import DONE, EventStreamResponse, event


def test_event_framing() -> None:
    assert event(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert DONE == b"data: [DONE]\n\n"


async def _run(
    events: AsyncIterator[bytes],
    disconnect_after: float | None,
    sent: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    sent = [] if sent is None else sent

    async def receive() -> dict[str, Any]:
        if disconnect_after is None:
            await asyncio.Event().wait()
        await asyncio.sleep(disconnect_after or 0)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await EventStreamResponse(events)({"type": "http"}, receive, send)
    return sent


def test_each_event_is_sent_as_its_own_body_message() -> None:
    async def events() -> AsyncIterator[bytes]:
        for i in range(3):
            yield event(str(i).encode())
        yield DONE

    sent = asyncio.run(_run(events(), disconnect_after=None))
    assert sent[0]["type"] == "http.response.start"
    assert dict(sent[0]["headers"])[b"content-type"].startswith(b"text/event-stream")
    bodies = [m["body"] for m in sent[1:]]
    assert bodies == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n", DONE, b""]
    assert sent[-1]["more_body"] is False


class Endless:
    """An event stream that goes on until closed, recording what it produced."""

    def __init__(self) -> None:
        self.produced: list[int] = []
        self.closed = False

    async def events(self) -> AsyncIterator[bytes]:
        try:
            for i in range(10_000):
                self.produced.append(i)
                yield event(b"x")
                await asyncio.sleep(0.01)
        finally:
            self.closed = True


def test_disconnect_cancels_the_event_iterator() -> None:
    stream = Endless()

    async def scenario() -> list[dict[str, Any]]:
        sent = await asyncio.wait_for(_run(stream.events(), disconnect_after=0.1), timeout=5)
        assert stream.closed
        return sent

    sent = asyncio.run(scenario())
    assert 1 <= len(stream.produced) < 100
    assert all(m.get("more_body", True) for m in sent[1:])


def test_a_foreign_cancel_of_the_stream_propagates_and_closes_the_events() -> None:
    stream = Endless()
    sent: list[dict[str, Any]] = []

    async def scenario() -> bool:
        task = asyncio.create_task(_run(stream.events(), disconnect_after=None, sent=sent))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        return stream.closed

    assert asyncio.run(asyncio.wait_for(scenario(), timeout=5)) is True
    assert 1 <= len(stream.produced) < 100
    assert sent[0]["type"] == "http.response.start"
    assert all(m["more_body"] for m in sent[1:])  # no clean end of the body was sent
