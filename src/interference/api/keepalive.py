"""Opening a stream for an agent dialect, with keep-alives while the first token is awaited.

The router returns a stream once its first output has arrived, so that a failure before it can
fall back or be a real HTTP status. A long prompt read on a CPU can take longer than an agent's
patience, though, so the agent routes wait ``keepalive`` seconds for it: a stream that opened
(or failed) by then is answered as usual; one that did not is answered at once, 200 and the
dialect's opening events, then a keep-alive every ``keepalive`` seconds until it opens, and a
failure after that is the dialect's error event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from interference.routing.router import StreamAnswer

Opening = asyncio.Future[StreamAnswer]


async def open_within(opening: Coroutine[Any, Any, StreamAnswer], wait: float) -> Opening:
    """Start ``opening`` and give it ``wait`` seconds; a failure within them is raised here."""
    future = asyncio.ensure_future(opening)
    try:
        await asyncio.wait_for(asyncio.shield(future), wait)
    except TimeoutError:
        pass
    except BaseException:
        future.cancel()
        raise
    return future


async def ticks(opening: Opening, interval: float) -> AsyncIterator[None]:
    """One tick every ``interval`` seconds until ``opening`` is done."""
    while not opening.done():
        done, _ = await asyncio.wait({opening}, timeout=interval)
        if not done:
            yield None


async def release(opening: Opening) -> None:
    """Stop a stream still opening; close one that opened. (Safe to call more than once.)"""
    if not opening.done():
        opening.cancel()
    elif not opening.cancelled() and opening.exception() is None:
        await opening.result().chunks.aclose()
