"""Who may run while the engine's context is shared.

The slots of a local model share one pool of context (llama.cpp's unified KV cache, see
``LlamaEngine._params``): a long prompt may use all of it, and requests running together may
not fit in it at once. When that happens llama.cpp ends every request in flight ("Context size
has been exceeded."). Requests run *shared* here; one that the engine ended that way before it
produced anything runs again *alone*: new requests wait until it is done, and it starts once
the requests in flight are done. A request that fits the context alone always fits then, so
the retry cannot fail the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable


class ContextGate:
    """Shared runs and alone runs of engine requests (a readers-writer lock whose writers,
    the retries, go first)."""

    def __init__(self) -> None:
        self.shared_runs = 0
        self.alone_run = False
        self.alone_waiting = 0
        self._waiters: list[asyncio.Future[None]] = []

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        await self._wait_until(lambda: not self.alone_run and not self.alone_waiting)
        self.shared_runs += 1
        try:
            yield
        finally:
            self.shared_runs -= 1
            self._wake()

    @contextlib.asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        self.alone_waiting += 1
        try:
            await self._wait_until(lambda: not self.alone_run and not self.shared_runs)
        finally:
            self.alone_waiting -= 1
            self._wake()  # shared requests held back by this waiter may go, if it gave up
        self.alone_run = True
        try:
            yield
        finally:
            self.alone_run = False
            self._wake()

    async def _wait_until(self, ready: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        while not ready():
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)

    def _wake(self) -> None:
        """Let every waiter check again (release is synchronous: it may run while a
        cancelled stream closes)."""
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
