"""Bounds on a stream's waits: the idle gap between chunks and the total time, on one timer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import TypeVar

T = TypeVar("T")


class StreamBounds:
    """The idle-gap and total-time bounds on the waits for a stream's chunks, with one timer.

    An ``asyncio.timeout`` around each wait costs a timer (a heap push and pop) per chunk; this
    keeps a single timer that is moved on only when it fires while the stream is still inside
    its bounds, so a steady stream pays one clock read per wait. When a bound is crossed the
    waiting task is cancelled and :meth:`next` raises ``TimeoutError`` (a cancellation from
    elsewhere passes through as it is).
    """

    def __init__(self, idle: float, total_left: float) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._idle = idle
        self._deadline = self._loop.time() + total_left
        self._since = 0.0  # when the current wait began
        self._waiting = False
        self._timer: asyncio.TimerHandle | None = None
        self._cancelling = 0  # the task's cancel requests when the current wait began
        self._fired = False
        self.crossed = ""  # which bound: "idle gap" or "total time"

    async def next(self, upstream: AsyncGenerator[T, None]) -> T:
        now = self._loop.time()
        if now >= self._deadline:
            self.crossed = "total time"
            raise TimeoutError
        self._since = now
        self._cancelling = self._task.cancelling()
        if self._timer is None:
            self._timer = self._loop.call_at(min(now + self._idle, self._deadline), self._check)
        self._waiting = True
        try:
            return await anext(upstream)
        except asyncio.CancelledError:
            if self._fired and self._task.uncancel() <= self._cancelling:
                raise TimeoutError from None
            raise
        finally:
            self._waiting = False

    def _check(self) -> None:
        self._timer = None
        if not self._waiting:
            return  # the next wait sets a new timer
        now = self._loop.time()
        idle_end = self._since + self._idle
        due = min(idle_end, self._deadline)
        if now < due:
            self._timer = self._loop.call_at(due, self._check)
            return
        self.crossed = "idle gap" if idle_end <= self._deadline else "total time"
        self._fired = True
        self._task.cancel()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
