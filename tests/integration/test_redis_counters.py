"""Virtual keys' counters in a real Redis (``storage.redis_url``), shared by several processes:
here two :class:`KeyCounters`, as two replicas of the gateway would hold them. Limits and
budgets hold for both together; a replica that dies stops holding within its lease; a Redis
that stops answering leaves requests waiting no longer than ``storage.redis_timeout_s``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from interference.errors import BudgetExceededError, RateLimitError, StorageUnavailableError
from interference.store.counters import KeyCounters
from interference.store.keys import KeyRecord
from interference.store.rate_limits import header_pairs
from tests.support.services import Redis

T = TypeVar("T")


def key(digest: str = "d" * 64, **limits: Any) -> KeyRecord:
    return KeyRecord(digest=digest, created_at=0.0, **limits)


def run(work: Callable[[], Awaitable[T]]) -> T:
    async def inside() -> T:
        return await work()

    return asyncio.run(inside())


async def admitted(counters: KeyCounters, record: KeyRecord, request_id: str) -> int:
    try:
        await counters.admit(record, request_id)
    except RateLimitError:
        return 0
    return 1


def test_rpm_holds_for_two_replicas_together(redis_url: str) -> None:
    record = key(rpm=10)

    async def work() -> tuple[list[int], RateLimitError, bytes]:
        replicas = [KeyCounters(redis_url), KeyCounters(redis_url)]
        results = await asyncio.gather(
            *(admitted(replicas[i % 2], record, f"r{i}") for i in range(30))
        )
        with pytest.raises(RateLimitError) as refused:
            await replicas[0].admit(record, "late")
        fresh = key(rpm=10, digest="e" * 64)
        headers, shared = await replicas[1].admit(fresh, "first")
        assert shared
        for counters in replicas:
            await counters.close()
        return list(results), refused.value, headers

    results, refused, lines = run(work)  # headers as the server sends them
    headers = header_pairs(lines)
    assert sum(results) == 10  # 30 asked at once through two replicas: 10 in the minute
    assert refused.code == "rate_limit_exceeded"
    assert 55 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert (b"x-ratelimit-limit-requests", b"10") in headers
    assert (b"x-ratelimit-remaining-requests", b"9") in headers


def test_max_parallel_and_tpm_are_shared(redis_url: str) -> None:
    parallel = key(max_parallel=3)
    tokens = key(tpm=250, digest="f" * 64)

    async def work() -> None:
        a, b = KeyCounters(redis_url), KeyCounters(redis_url)
        results = [await admitted(c, parallel, f"p{i}") for i, c in enumerate([a, b, a, b, a])]
        assert results == [1, 1, 1, 0, 0]
        a.release(parallel, "p0", 0, shared=True)  # sent off the request's path
        await asyncio.sleep(0.1)
        assert await admitted(b, parallel, "p5") == 1

        for i in range(3):
            _, shared = await (a if i % 2 else b).admit(tokens, f"t{i}")
            assert shared
            (a if i % 2 else b).release(tokens, f"t{i}", 100, shared=True)
        await asyncio.sleep(0.1)
        with pytest.raises(RateLimitError) as refused:  # 300 tokens in the minute
            await a.admit(tokens, "t3")
        assert refused.value.code == "tokens_rate_limit_exceeded"
        assert refused.value.headers["x-ratelimit-remaining-tokens"] == "0"
        await a.close()
        await b.close()

    run(work)


def test_a_budget_holds_for_concurrent_requests_on_two_replicas(redis_url: str) -> None:
    record = key(max_budget=1.0)

    async def reserve(counters: KeyCounters, request_id: str) -> int:
        try:
            await counters.reserve(record, request_id, 0.1, 0.2, store_ok=True)
        except BudgetExceededError:
            return 0
        return 1

    async def work() -> None:
        a, b = KeyCounters(redis_url), KeyCounters(redis_url)
        held = await asyncio.gather(*(reserve((a, b)[i % 2], f"r{i}") for i in range(100)))
        assert sum(held) == 8  # 0.2 spent, 8 x 0.1 held: the ninth would pass 1.0
        ids = [f"r{i}" for i, h in enumerate(held) if h]
        for i, request_id in enumerate(ids):  # each costs half its worst case
            (a, b)[i % 2].settle(record, request_id, 0.1, 0.05, 0.2, shared=True)
        await asyncio.sleep(0.2)
        assert await a.spend(record) == pytest.approx(0.2 + 8 * 0.05)
        assert sum(await asyncio.gather(*(reserve(b, f"s{i}") for i in range(10)))) == 4
        await a.close()
        await b.close()

    run(work)


def test_a_dead_replica_s_requests_stop_counting_when_its_lease_ends(redis_url: str) -> None:
    record = key(max_budget=1.0, max_parallel=2)

    async def work() -> None:
        dead, alive = KeyCounters(redis_url), KeyCounters(redis_url)
        for counters in (dead, alive):
            assert counters.redis is not None
            counters.redis.lease_s = 1
        await dead.admit(record, "d1")
        await dead.admit(record, "d2")
        await dead.reserve(record, "d1", 0.9, 0.0, store_ok=True)
        assert await admitted(alive, record, "a1") == 0
        with pytest.raises(BudgetExceededError):
            await alive.reserve(record, "a1", 0.5, 0.0, store_ok=True)
        # the living replica renews its own leases; the dead one never does again
        await asyncio.sleep(1.2)
        assert await admitted(alive, record, "a2") == 1
        assert await alive.reserve(record, "a2", 0.5, 0.0, store_ok=True) is True
        await asyncio.sleep(0.6)
        await alive.maintain()  # renewed: a2 still holds after the first lease would end
        await asyncio.sleep(0.6)
        with pytest.raises(BudgetExceededError):
            await alive.reserve(record, "a3", 0.6, 0.0, store_ok=True)
        await dead.redis.close()  # type: ignore[union-attr]
        await alive.close()

    run(work)


def test_redis_down_no_request_waits_and_budgets_fail_closed_or_open(
    redis_url: str, redis_server: Redis
) -> None:
    limited = key(rpm=100, max_budget=1.0)

    async def work() -> None:
        closed = KeyCounters(redis_url, timeout_s=0.2)
        opened = KeyCounters(redis_url, timeout_s=0.2, budgets_when_down="open")
        for _ in range(3):  # a loaded machine may miss the 0.2 s once: probe again
            _, shared = await closed.admit(limited, "before")
            if shared:
                break
            await closed.maintain()
        assert shared
        shared_reservation = await closed.reserve(limited, "before", 0.1, 0.0, store_ok=True)
        assert shared_reservation is True

        redis_server.stop()
        started = time.perf_counter()
        headers, shared = await closed.admit(limited, "during")
        assert time.perf_counter() - started < 1.0  # no longer than the timeout, twice
        assert shared is False  # counted in this process now
        assert (b"x-ratelimit-limit-requests", b"100") in header_pairs(headers)
        assert closed.describe()["counters"] == "process (redis is down)"
        with pytest.raises(StorageUnavailableError) as refused:
            await closed.reserve(limited, "during", 0.1, 0.0, store_ok=True)
        assert refused.value.status == 503
        assert refused.value.code == "budget_unavailable"
        await opened.admit(limited, "during")
        assert await opened.reserve(limited, "during", 0.1, 0.0, store_ok=True) is False
        with pytest.raises(BudgetExceededError):  # still held to the budget, on local counts
            await opened.reserve(limited, "more", 0.95, 0.0, store_ok=True)

        # the request counted in Redis ends while it is down: its cost waits, then is sent
        closed.settle(limited, "before", 0.1, 0.07, 0.0, shared=True)
        await asyncio.sleep(0.3)
        assert closed.describe()["waiting_for_redis"] == 1
        redis_server.start()
        await closed.maintain()
        assert closed.describe()["counters"] == "redis"
        assert closed.describe()["waiting_for_redis"] == 0
        assert await closed.spend(limited) == pytest.approx(0.07)
        await closed.close()
        await opened.close()

    run(work)
