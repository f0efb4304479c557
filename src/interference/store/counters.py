"""Where virtual keys' limits and budget reservations are counted: in this process, or in Redis
for every process and replica of the gateway (``storage.redis_url``).

:class:`KeyCounters` is what the guard and the accounting ask. With Redis it asks Redis, one
atomic script per check (:mod:`interference.store.redis_counters`). Redis that cannot be reached
within ``storage.redis_timeout_s`` is *down*: from then on, until a probe every
``storage.refresh_s`` finds it again, no request waits on it. While it is down,

- ``rpm``, ``tpm`` and ``max_parallel`` are counted in this process (each process then allows
  the whole limit: the log and ``/health`` say so);
- a key with a budget is refused (503 ``budget_unavailable``) when ``storage.budgets_when_down``
  is ``closed`` (the default), or held against this process's counts when it is ``open``.

What a request counted in Redis is given back to Redis when it ends; a give-back that fails is
kept and sent again once Redis answers (a reservation would expire by itself, a cost must not
be lost).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from interference.errors import BudgetExceededError, StorageUnavailableError
from interference.store.keys import KeyRecord
from interference.store.rate_limits import (
    ADMITTED,
    HeadLines,
    KeyLimiter,
    Window,
    limit_headers,
    limited,
    refusal,
)
from interference.store.redis_counters import RedisCounters

logger = logging.getLogger(__name__)

#: give-backs kept while Redis is down, at most (past this the oldest are dropped, and counted)
_UNSENT_LIMIT = 100_000


class KeyCounters:
    def __init__(
        self,
        redis_url: str | None = None,
        timeout_s: float = 0.5,
        budgets_when_down: str = "closed",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.local = KeyLimiter(clock)
        self.redis = RedisCounters(redis_url, timeout_s) if redis_url else None
        self.budgets_when_down = budgets_when_down
        self.down_since: float | None = None  # Redis did not answer; None: up (or unused)
        self.error: str | None = None
        self.dropped = 0  # give-backs lost because too many waited for Redis
        self._held: dict[str, float] = {}  # local reservations: key digest -> USD
        self._parallel: dict[str, str] = {}  # request id -> digest, counted in Redis
        self._leases: dict[str, str] = {}  # request id -> digest, holding budget in Redis
        self._unsent: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def shared(self) -> bool:
        """Whether the counts are the whole gateway's now (Redis configured and up)."""
        return self.redis is not None and self.down_since is None

    def _went_down(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.time()
            logger.warning(
                "Redis (%s) does not answer (%s): limits are counted per process, and keys with "
                "a budget are %s, until it does",
                self.redis.where if self.redis else "-",
                type(exc).__name__,
                "refused" if self.budgets_when_down == "closed" else "admitted on local counts",
            )
        self.error = f"{type(exc).__name__}: {exc}"[:300]

    # --- rate limits

    async def admit(self, key: KeyRecord, request_id: str) -> tuple[HeadLines, bool]:
        """Count a request of ``key`` against its limits, or raise the 429 that refuses it;
        the answer's rate-limit headers, and whether Redis counted it."""
        if not limited(key):
            return b"", False
        if self.redis is not None and self.down_since is None:
            try:
                verdict, requests, tokens, request_reset, token_reset = await self.redis.admit(
                    key.digest, request_id, key.rpm, key.tpm, key.max_parallel
                )
            except Exception as exc:
                self._went_down(exc)
            else:
                window = Window(requests, request_reset, tokens, token_reset)
                if verdict != ADMITTED:
                    raise refusal(key, verdict, window)
                self._parallel[request_id] = key.digest
                return limit_headers(key, window), True
        return self.local.admit(key), False

    def release(self, key: KeyRecord, request_id: str, tokens: int, shared: bool) -> None:
        """A request admitted by :meth:`admit` ended, having used ``tokens``."""
        if not shared:
            self.local.done(key, tokens)
            return
        self._parallel.pop(request_id, None)
        redis = self.redis
        assert redis is not None
        self._send(lambda: redis.release(key.digest, request_id, tokens))

    # --- budgets

    async def reserve(
        self, key: KeyRecord, request_id: str, cost: float, known_spend: float, store_ok: bool
    ) -> bool:
        """Hold ``cost`` against the key's budget, or raise the 429 (or 503) that refuses the
        request; whether Redis holds it. ``known_spend``: the key's spend as the database and
        this process know it; ``store_ok``: whether the database is answering."""
        assert key.max_budget is not None
        if self.redis is not None and self.down_since is None:
            try:
                held, spend, holding = await self.redis.reserve(
                    key.digest, key.budget_reset_at, request_id, cost, key.max_budget, known_spend
                )
            except Exception as exc:
                self._went_down(exc)
            else:
                if not held:
                    raise _over_budget(key, cost, spend + holding)
                self._leases[request_id] = key.digest
                return True
        return self.reserve_here(key, cost, known_spend, store_ok)

    def reserve_here(self, key: KeyRecord, cost: float, known_spend: float, store_ok: bool) -> bool:
        """:meth:`reserve` on this process's counts (Redis unused or down); False."""
        assert key.max_budget is not None
        if self.budgets_when_down == "closed" and (self.redis is not None or not store_ok):
            raise StorageUnavailableError(
                "This key has a budget, and the store that counts it cannot be reached; "
                "send the request again in a moment.",
                headers={"retry-after": "5"},
            )
        held_here = self._held.get(key.digest, 0.0)
        if known_spend + held_here + cost > key.max_budget:
            raise _over_budget(key, cost, known_spend + held_here)
        self._held[key.digest] = held_here + cost
        return False

    def settle(
        self,
        key: KeyRecord,
        request_id: str,
        reserved: float,
        cost: float,
        known_spend: float,
        shared: bool,
    ) -> None:
        """A request that reserved ``reserved`` ended, having cost ``cost``."""
        if not shared:
            self._held[key.digest] = self._held.get(key.digest, 0.0) - reserved
            return
        self._leases.pop(request_id, None)
        redis = self.redis
        assert redis is not None
        period = key.budget_reset_at
        self._send(lambda: redis.settle(key.digest, period, request_id, cost, known_spend))

    def held(self, digest: str) -> float:
        """What this process's requests hold of the key's budget (local reservations)."""
        return self._held.get(digest, 0.0)

    # --- give-backs and upkeep

    def _send(self, call: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``call`` soon, off the request's path; keep it for later if Redis fails it."""
        if self.down_since is not None:
            self._keep(call)
            return

        async def send() -> None:
            try:
                await call()
            except Exception as exc:
                self._went_down(exc)
                self._keep(call)

        task = asyncio.get_running_loop().create_task(send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _keep(self, call: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._unsent.append(call)
        if len(self._unsent) > _UNSENT_LIMIT:
            del self._unsent[0]
            self.dropped += 1

    async def maintain(self) -> None:
        """Every ``storage.refresh_s``: find Redis again if it was down and send what waited,
        and renew the leases of this process's requests in flight."""
        if self.redis is None:
            return
        try:
            if self.down_since is not None:
                await self.redis.ping()
                while self._unsent:
                    await self._unsent[0]()
                    del self._unsent[0]
                logger.info("Redis (%s) answers again: limits are shared", self.redis.where)
                self.down_since, self.error = None, None
            await self.redis.renew(
                [(d, r) for r, d in self._parallel.items()],
                [(d, r) for r, d in self._leases.items()],
            )
        except Exception as exc:
            self._went_down(exc)

    async def spend(self, key: KeyRecord) -> float | None:
        """The key's spend as Redis counts it (None: not counted there, or Redis is down)."""
        if self.redis is None or self.down_since is not None:
            return None
        try:
            return await self.redis.spend(key.digest, key.budget_reset_at)
        except Exception as exc:
            self._went_down(exc)
            return None

    def describe(self) -> dict[str, object]:
        """What ``/health`` says of the counters."""
        if self.redis is None:
            return {"counters": "process"}
        return {
            "counters": "redis" if self.down_since is None else "process (redis is down)",
            "redis": self.redis.where,
            "redis_error": self.error,
            "waiting_for_redis": len(self._unsent),
            "dropped": self.dropped,
        }

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        if self.redis is not None:
            if self._unsent and self.down_since is None:
                await self.maintain()
            await self.redis.close()


def _over_budget(key: KeyRecord, cost: float, committed: float) -> BudgetExceededError:
    return BudgetExceededError(
        f"Budget exceeded: this key's budget is {key.max_budget:g} USD, {committed:.6f} USD of "
        f"it is spent or held, and this request could cost up to {cost:.6f} USD."
    )
