"""Virtual keys' counters in Redis, shared by every process and replica of a gateway
(``storage.redis_url``); needs ``pip install redis``.

Each check-and-count is one Lua script, which Redis runs alone: no other replica's request can
come between a key's check and its count, so a limit holds for the whole gateway, not per
replica. The scripts read Redis's clock (``TIME``), so the replicas' clocks need not agree.

Per key (``{digest}`` is a hash tag: a key's counters live on one node of a cluster):

- ``ifr:{d}:req``, a sorted set of the request ids admitted in the last 60 s (``rpm``: a sliding
  window, as in :mod:`interference.store.rate_limits`);
- ``ifr:{d}:tok``, a hash of tokens used per second of the last 60 (``tpm``);
- ``ifr:{d}:par``, a sorted set of the requests in flight (``max_parallel``);
- ``ifr:{d}:held`` and ``ifr:{d}:lease``, what each request in flight holds of the budget;
- ``ifr:{d}:spend:{period}``, what the key spent in its budget period (started from the
  database's figure when missing; every finished request adds its cost).

A request in flight is a *lease* that the process holding it renews every ``storage.refresh_s``
(:meth:`RedisCounters.renew`); a process that dies stops renewing, and its requests stop counting
against ``max_parallel`` and the budget within :data:`LEASE_S`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from interference.config import ConfigError

#: how long a request in flight counts without its process renewing it
LEASE_S = 30
#: how long a key's spend counter is kept without a request
SPEND_TTL_S = 30 * 86400

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

#: KEYS: req, tok, par; ARGV: request id, rpm, tpm, max parallel (-1: none), lease seconds.
#: Returns {verdict (0 admitted, 1 parallel, 2 rpm, 3 tpm), requests in the window, tokens in
#: the window, seconds until the oldest request leaves it, seconds until the oldest tokens do}.
ADMIT = (
    _NOW
    + """
local rid, rpm, tpm = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local parallel, lease = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local tokens, oldest = 0, nil
local buckets = redis.call('HGETALL', KEYS[2])
for i = 1, #buckets, 2 do
  local second = tonumber(buckets[i])
  if second + 1 <= now - 60 then
    redis.call('HDEL', KEYS[2], buckets[i])
  else
    tokens = tokens + tonumber(buckets[i + 1])
    if oldest == nil or second < oldest then oldest = second end
  end
end
local count = redis.call('ZCARD', KEYS[1])
local verdict = 0
if parallel >= 0 and redis.call('ZCARD', KEYS[3]) >= parallel then
  verdict = 1
elseif rpm >= 0 and count >= rpm then
  verdict = 2
elseif tpm >= 0 and tokens >= tpm then
  verdict = 3
else
  redis.call('ZADD', KEYS[1], now, rid)
  redis.call('ZADD', KEYS[3], now + lease, rid)
  redis.call('EXPIRE', KEYS[1], 61)
  redis.call('EXPIRE', KEYS[3], lease + 1)
  count = count + 1
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local request_reset, token_reset = 0, 0
if first[2] then request_reset = tonumber(first[2]) + 60 - now end
if oldest then token_reset = oldest + 61 - now end
return {verdict, count, tokens, tostring(request_reset), tostring(token_reset)}
"""
)

#: KEYS: par, tok; ARGV: request id, tokens it used
RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
local tokens = tonumber(ARGV[2])
if tokens > 0 then
  local t = redis.call('TIME')
  redis.call('HINCRBY', KEYS[2], t[1], tokens)
  redis.call('EXPIRE', KEYS[2], 62)
end
return 1
"""

#: KEYS: spend, held, lease; ARGV: request id, cost, max budget, the database's spend (the
#: counter's start when missing), lease seconds, the counter's time to live.
#: Returns {1 held or 0 refused, spend, held by requests in flight (with this one if held)}.
RESERVE = (
    _NOW
    + """
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)
for _, rid in ipairs(expired) do
  redis.call('HDEL', KEYS[2], rid)
  redis.call('ZREM', KEYS[3], rid)
end
local spent = redis.call('GET', KEYS[1])
if not spent then
  spent = ARGV[4]
  redis.call('SET', KEYS[1], spent, 'EX', ARGV[6])
end
local held = 0
for _, value in ipairs(redis.call('HVALS', KEYS[2])) do held = held + tonumber(value) end
local cost = tonumber(ARGV[2])
if tonumber(spent) + held + cost > tonumber(ARGV[3]) then
  return {0, tostring(spent), tostring(held)}
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), ARGV[1])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]) + 1)
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[5]) + 1)
return {1, tostring(spent), tostring(held + cost)}
"""
)

#: KEYS: spend, held, lease; ARGV: request id, its real cost, the database's spend, time to live
SETTLE = """
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if tonumber(ARGV[2]) > 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], ARGV[3]) end
  redis.call('INCRBYFLOAT', KEYS[1], ARGV[2])
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
return 1
"""

#: KEYS: sorted sets of leases; ARGV: lease seconds, then the member of each key (only those
#: still there are extended: a request that ended is not brought back)
RENEW = (
    _NOW
    + """
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + tonumber(ARGV[1]), ARGV[i + 1])
end
return #KEYS
"""
)


def _number(value: Any) -> float:
    return float(value.decode() if isinstance(value, bytes) else value)


class RedisCounters:
    """The scripts above, on the Redis at ``url``; every call gives up after ``timeout_s``."""

    def __init__(self, url: str, timeout_s: float, lease_s: int = LEASE_S) -> None:
        try:  # only here: importing redis costs 25 ms at start, more with OpenTelemetry around
            import redis.asyncio as redis_asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:
            raise ConfigError(
                "storage.redis_url is set, but the Redis client is not installed: pip install redis"
            ) from None
        self.url = url
        self.timeout_s = timeout_s
        self.lease_s = lease_s
        self.client = redis_asyncio.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),  # a request must not wait through retries
        )
        self._admit = self.client.register_script(ADMIT)
        self._release = self.client.register_script(RELEASE)
        self._reserve = self.client.register_script(RESERVE)
        self._settle = self.client.register_script(SETTLE)
        self._renew = self.client.register_script(RENEW)

    @property
    def where(self) -> str:
        """The server, without a password."""
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}"

    async def _bounded(self, call: Any) -> Any:
        return await asyncio.wait_for(call, self.timeout_s * 2)

    async def admit(
        self, digest: str, request_id: str, rpm: int | None, tpm: int | None, parallel: int | None
    ) -> tuple[int, int, int, float, float]:
        """(verdict, requests in the window, tokens in the window, seconds to the requests'
        reset, seconds to the tokens' reset); verdict 0 admitted the request."""
        keys = [f"ifr:{{{digest}}}:req", f"ifr:{{{digest}}}:tok", f"ifr:{{{digest}}}:par"]
        limits = [-1 if v is None else v for v in (rpm, tpm, parallel)]
        found = await self._bounded(self._admit(keys, [request_id, *limits, self.lease_s]))
        verdict, count, tokens, request_reset, token_reset = found
        return int(verdict), int(count), int(tokens), _number(request_reset), _number(token_reset)

    async def release(self, digest: str, request_id: str, tokens: int) -> None:
        keys = [f"ifr:{{{digest}}}:par", f"ifr:{{{digest}}}:tok"]
        await self._bounded(self._release(keys, [request_id, tokens]))

    def _budget_keys(self, digest: str, period: float | None) -> list[str]:
        return [
            f"ifr:{{{digest}}}:spend:{int(period or 0)}",
            f"ifr:{{{digest}}}:held",
            f"ifr:{{{digest}}}:lease",
        ]

    async def reserve(
        self,
        digest: str,
        period: float | None,
        request_id: str,
        cost: float,
        max_budget: float,
        known_spend: float,
    ) -> tuple[bool, float, float]:
        """(held, spend, held by requests in flight) for the key's budget period ``period``
        (its ``budget_reset_at``)."""
        args: list[str | int] = [
            request_id, repr(cost), repr(max_budget), repr(known_spend), self.lease_s, SPEND_TTL_S
        ]  # fmt: skip
        found = await self._bounded(self._reserve(self._budget_keys(digest, period), args))
        return bool(int(found[0])), _number(found[1]), _number(found[2])

    async def settle(
        self, digest: str, period: float | None, request_id: str, cost: float, known_spend: float
    ) -> None:
        args: list[str | int] = [request_id, repr(cost), repr(known_spend), SPEND_TTL_S]
        await self._bounded(self._settle(self._budget_keys(digest, period), args))

    async def spend(self, digest: str, period: float | None) -> float | None:
        """The key's spend counter, if it has one."""
        value = await self._bounded(self.client.get(self._budget_keys(digest, period)[0]))
        return None if value is None else _number(value)

    async def renew(
        self, parallel: Iterable[tuple[str, str]], held: Iterable[tuple[str, str]]
    ) -> None:
        """Extend the leases of this process's requests in flight: ``(digest, request id)`` of
        those counted in ``max_parallel`` and of those holding budget."""
        keys: list[str] = []
        members: list[str] = []
        for suffix, entries in (("par", parallel), ("lease", held)):
            for digest, request_id in entries:
                keys.append(f"ifr:{{{digest}}}:{suffix}")
                members.append(request_id)
        if keys:
            await self._bounded(self._renew(keys, [self.lease_s, *members]))

    async def ping(self) -> None:
        await self._bounded(self.client.ping())

    async def close(self) -> None:
        await self.client.aclose()
