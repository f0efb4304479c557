"""The idle-gap and total-time bounds on a stream's waits, kept with a single timer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from interference.routing.bounds import StreamBounds

T = TypeVar("T")


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one scenario on a fresh loop, never for more than a few seconds."""

    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout=5)

    return asyncio.run(bounded())


async def items(gaps: list[float], then_hang: bool = False) -> AsyncGenerator[int, None]:
    """Yield 0, 1, ... each after its gap; then end, or hang for a long while."""
    for i, gap in enumerate(gaps):
        if gap:
            await asyncio.sleep(gap)
        yield i
    if then_hang:
        await asyncio.sleep(30)


async def drain(
    bounds: StreamBounds, upstream: AsyncGenerator[int, None], got: list[int] | None = None
) -> list[int]:
    got = [] if got is None else got
    while True:
        try:
            got.append(await bounds.next(upstream))
        except StopAsyncIteration:
            return got


def test_a_steady_stream_faster_than_idle_never_times_out() -> None:
    async def scenario() -> tuple[list[int], str, int]:
        bounds = StreamBounds(idle=0.1, total_left=5)
        try:
            got = await drain(bounds, items([0.005] * 20))
        finally:
            bounds.close()
        task = asyncio.current_task()
        assert task is not None
        return got, bounds.crossed, task.cancelling()

    assert run(scenario) == (list(range(20)), "", 0)


def test_gaps_below_idle_keep_moving_the_one_timer_on() -> None:
    async def scenario() -> list[int]:
        bounds = StreamBounds(idle=0.1, total_left=5)
        try:
            return await drain(bounds, items([0.04] * 8))  # 0.32 s in all: past several idles
        finally:
            bounds.close()

    assert run(scenario) == list(range(8))


def test_a_gap_longer_than_idle_raises_timeout_error() -> None:
    async def scenario() -> tuple[list[int], str, float, int]:
        bounds = StreamBounds(idle=0.1, total_left=5)
        upstream = items([0, 0], then_hang=True)
        got = [await bounds.next(upstream), await bounds.next(upstream)]
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await bounds.next(upstream)
        elapsed = time.monotonic() - began
        bounds.close()
        task = asyncio.current_task()
        assert task is not None
        return got, bounds.crossed, elapsed, task.cancelling()

    got, crossed, elapsed, cancelling = run(scenario)
    assert (got, crossed, cancelling) == ([0, 1], "idle gap", 0)
    assert 0.09 <= elapsed < 0.1 + 0.2


def test_the_total_bound_counts_items_and_waits_alike() -> None:
    async def scenario() -> tuple[int, str, float]:
        began = time.monotonic()
        bounds = StreamBounds(idle=0.1, total_left=0.25)
        upstream = items([0.05] * 100)
        got: list[int] = []
        with pytest.raises(TimeoutError):
            await drain(bounds, upstream, got)
        bounds.close()
        assert got == list(range(len(got)))
        return len(got), bounds.crossed, time.monotonic() - began

    count, crossed, elapsed = run(scenario)
    assert crossed == "total time"
    assert 2 <= count <= 5
    assert 0.24 <= elapsed < 0.25 + 0.2


def test_a_spent_total_raises_at_once_without_touching_the_upstream() -> None:
    async def scenario() -> tuple[str, list[int]]:
        bounds = StreamBounds(idle=1, total_left=0)
        upstream = items([0, 0])
        with pytest.raises(TimeoutError):
            await bounds.next(upstream)
        bounds.close()
        return bounds.crossed, await drain(StreamBounds(idle=1, total_left=5), upstream)

    assert run(scenario) == ("total time", [0, 1])


def test_time_spent_by_the_consumer_is_not_an_idle_gap() -> None:
    async def scenario() -> tuple[list[int], str, float]:
        bounds = StreamBounds(idle=0.1, total_left=5)
        upstream = items([0, 0, 0, 0], then_hang=True)
        got: list[int] = []
        for _ in range(4):
            got.append(await bounds.next(upstream))
            await asyncio.sleep(0.15)  # longer than idle, but ours
        began = time.monotonic()
        with pytest.raises(TimeoutError):  # a real gap after that still trips the bound
            await bounds.next(upstream)
        bounds.close()
        return got, bounds.crossed, time.monotonic() - began

    got, crossed, elapsed = run(scenario)
    assert (got, crossed) == ([0, 1, 2, 3], "idle gap")
    assert 0.09 <= elapsed < 0.1 + 0.2


def test_an_outside_cancel_while_waiting_passes_through() -> None:
    seen: list[Any] = []

    async def consumer() -> None:
        bounds = StreamBounds(idle=0.5, total_left=5)
        try:
            await bounds.next(items([], then_hang=True))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            assert task is not None
            seen.append(("cancelled", task.cancelling(), bounds.crossed))
            raise
        finally:
            bounds.close()

    async def scenario() -> None:
        task = asyncio.create_task(consumer())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        seen.append(task.cancelled())

    run(scenario)
    assert seen == [("cancelled", 1, ""), True]


def test_an_outside_cancel_just_before_the_idle_timer_fires_passes_through() -> None:
    async def consumer() -> None:
        bounds = StreamBounds(idle=0.05, total_left=5)
        try:
            await bounds.next(items([], then_hang=True))
        finally:
            bounds.close()

    async def scenario() -> None:
        task = asyncio.create_task(consumer())
        await asyncio.sleep(0.01)  # the consumer waits; its timer is due 0.05 s later
        time.sleep(0.1)  # noqa: ASYNC251 (block the loop on purpose: the timer is now due)
        await asyncio.sleep(0)  # resume in the same loop pass as the timer, just before it
        task.cancel()  # e.g. the SSE response's watcher on a client disconnect
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario)


def test_after_close_no_timer_is_left() -> None:
    async def scenario() -> tuple[list[bool], list[int], str]:
        loop = asyncio.get_running_loop()
        bounds = StreamBounds(idle=0.05, total_left=5)
        timers: list[asyncio.TimerHandle] = []
        call_at = loop.call_at

        def recording(when: float, callback: Callable[..., Any], *args: Any, **kw: Any) -> Any:
            handle = call_at(when, callback, *args, **kw)
            if getattr(callback, "__self__", None) is bounds:
                timers.append(handle)
            return handle

        loop.call_at = recording  # type: ignore[method-assign]
        upstream = items([0, 0.2])
        got = [await bounds.next(upstream)]
        bounds.close()
        await asyncio.sleep(0.1)  # past idle, no next() pending: nothing may fire
        cancelled = [handle.cancelled() for handle in timers]
        with pytest.raises(TimeoutError):  # a later next() arms a fresh timer
            got.append(await bounds.next(upstream))
        bounds.close()
        return cancelled, got, bounds.crossed

    cancelled, got, crossed = run(scenario)
    assert (cancelled, got, crossed) == ([True], [0], "idle gap")
