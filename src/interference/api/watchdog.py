"""The guard's watchdog: one task that, every 0.25 s, ends the requests that overstep a bound
from outside their own task, so that no request pays for a timer or a watcher of its own.

- a stream whose client has not taken data for ``limits.slow_client_s`` (``slow_client``);
- a request whose body has not arrived within ``limits.body_timeout_s`` (``body_timeout``, 408);
- a call that takes longer than one period gets a disconnect watch: its client going away stops
  its upstream request or local generation (``client_closed``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from functools import partial

from interference.api.record import RequestRecord
from interference.api.sse import wait_for_disconnect
from interference.config import LimitsConfig

WATCH_EVERY_S = 0.25  # the period: the precision of the bounds it keeps


class Watchdog:
    """Watches ``active`` requests; ``cut(record, reason)`` ends one."""

    def __init__(
        self,
        active: set[RequestRecord],
        limits: LimitsConfig,
        cut: Callable[[RequestRecord, str], bool],
    ) -> None:
        self._active = active
        self._limits = limits
        self._cut = cut
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start watching (inside the app's event loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="request watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        limits = self._limits
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            now = loop.time()
            for record in list(self._active):
                if record.sending_since and now - record.sending_since > limits.slow_client_s:
                    self._cut(record, "slow_client")
                elif not record.body_done:
                    if now - record.loop_started > limits.body_timeout_s:
                        self._cut(record, "body_timeout")
                elif (
                    not record.response_started
                    and record.hang_up_watch is None
                    and record.receive is not None
                    and now - record.loop_started > WATCH_EVERY_S
                ):
                    # A call that takes a while: from now on, a disconnect stops it. (Watching
                    # every request from its start would cost a task each.)
                    record.hang_up_watch = asyncio.create_task(
                        wait_for_disconnect(
                            record.receive, partial(self._cut, record, "client_closed")
                        )
                    )
