"""A virtual key's ``rpm_limit``, ``tpm_limit`` and ``max_parallel_requests``, in this process.

- Requests per minute: a sliding window (the times of the key's requests of the last 60 s), so
  that at most ``rpm`` requests are admitted in *any* 60 s, bursts included (a token bucket would
  let twice as many through around a refill).
- Tokens per minute: the tokens of the key's requests that ended in the last 60 s; a request is
  refused while they reach ``tpm`` (its own size is known only once it ends, so one request may
  take a key past its limit, and the next ones then wait).
- Parallel requests: a count of the key's requests in flight.

A refusal is a 429 with ``Retry-After`` (when the oldest request or tokens leave the window) and
answers carry ``x-ratelimit-*`` headers. The state is this process's memory: with ``--workers N``
or several replicas each process applies the limits on its own (a shared counter store is issue
16's next part).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from interference.errors import RateLimitError
from interference.store.keys import KeyRecord

WINDOW_S = 60.0


@dataclass
class _Usage:
    requests: deque[float] = field(default_factory=deque)  # admission times
    tokens: deque[tuple[float, int]] = field(default_factory=deque)  # (end time, tokens)
    token_total: int = 0
    in_flight: int = 0

    def expire(self, now: float) -> None:
        while self.requests and self.requests[0] <= now - WINDOW_S:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= now - WINDOW_S:
            self.token_total -= self.tokens.popleft()[1]


class KeyLimiter:
    """The limits of the virtual keys, checked when a request is admitted."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._usage: dict[str, _Usage] = {}

    def admit(self, key: KeyRecord) -> dict[str, str]:
        """Count a request of ``key``, or raise the 429 that refuses it; the rate-limit
        headers of its answer."""
        if key.rpm is None and key.tpm is None and key.max_parallel is None:
            return {}
        now = self._clock()
        usage = self._usage.setdefault(key.digest, _Usage())
        usage.expire(now)
        if key.max_parallel is not None and usage.in_flight >= key.max_parallel:
            raise RateLimitError(
                f"This key may have {key.max_parallel} requests in flight at once.",
                code="max_parallel_requests_exceeded",
                headers={"retry-after": "1"},
            )
        if key.rpm is not None and len(usage.requests) >= key.rpm:
            wait = usage.requests[0] + WINDOW_S - now
            raise RateLimitError(
                f"Rate limit reached: this key may make {key.rpm} requests per minute.",
                code="rate_limit_exceeded",
                headers={
                    "retry-after": str(max(1, math.ceil(wait))),
                    **self._headers(key, usage, now),
                },
            )
        if key.tpm is not None and usage.token_total >= key.tpm:
            wait = usage.tokens[0][0] + WINDOW_S - now
            raise RateLimitError(
                f"Rate limit reached: this key may use {key.tpm} tokens per minute.",
                code="tokens_rate_limit_exceeded",
                headers={
                    "retry-after": str(max(1, math.ceil(wait))),
                    **self._headers(key, usage, now),
                },
            )
        usage.requests.append(now)
        usage.in_flight += 1
        return self._headers(key, usage, now)

    def done(self, key: KeyRecord, tokens: int) -> None:
        """A request admitted by :meth:`admit` ended, having used ``tokens``."""
        usage = self._usage.get(key.digest)
        if usage is None:
            return
        usage.in_flight -= 1
        if tokens > 0:
            usage.tokens.append((self._clock(), tokens))
            usage.token_total += tokens

    @staticmethod
    def _headers(key: KeyRecord, usage: _Usage, now: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        if key.rpm is not None:
            reset = usage.requests[0] + WINDOW_S - now if usage.requests else 0.0
            headers["x-ratelimit-limit-requests"] = str(key.rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(0, key.rpm - len(usage.requests)))
            headers["x-ratelimit-reset-requests"] = f"{max(0.0, reset):.0f}s"
        if key.tpm is not None:
            reset = usage.tokens[0][0] + WINDOW_S - now if usage.tokens else 0.0
            headers["x-ratelimit-limit-tokens"] = str(key.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, key.tpm - usage.token_total))
            headers["x-ratelimit-reset-tokens"] = f"{max(0.0, reset):.0f}s"
        return headers
