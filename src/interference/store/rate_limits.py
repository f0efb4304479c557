"""A virtual key's ``rpm_limit``, ``tpm_limit`` and ``max_parallel_requests``, in this process.

- Requests per minute: a sliding window (the times of the key's requests of the last 60 s), so
  that at most ``rpm`` requests are admitted in *any* 60 s, bursts included (a token bucket would
  let twice as many through around a refill).
- Tokens per minute: the tokens of the key's requests that ended in the last 60 s (counted per
  second: a second's tokens leave the window together); a request is
  refused while they reach ``tpm`` (its own size is known only once it ends, so one request may
  take a key past its limit, and the next ones then wait).
- Parallel requests: a count of the key's requests in flight.

A refusal is a 429 with ``Retry-After`` (when the oldest request or tokens leave the window) and
answers carry ``x-ratelimit-*`` headers. The state here is this process's memory; with
``storage.redis_url`` the same windows live in Redis, shared by every process
(:mod:`interference.store.redis_counters`), and :func:`refusal` and :func:`limit_headers` say the
same things for both.
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


@dataclass(slots=True)
class _Usage:
    requests: deque[float] = field(default_factory=deque)  # admission times (with rpm)
    tokens: deque[list[int]] = field(default_factory=deque)  # [second, tokens] (with tpm)
    token_total: int = 0
    in_flight: int = 0

    def window(self, now: float) -> Window:
        """The counts at ``now`` (after :meth:`expire`)."""
        requests, tokens = self.requests, self.tokens
        return Window(
            len(requests),
            requests[0] + WINDOW_S - now if requests else 0.0,
            self.token_total,
            tokens[0][0] + 1 + WINDOW_S - now if tokens else 0.0,
        )

    def expire(self, now: float) -> None:
        requests, tokens = self.requests, self.tokens
        while requests and requests[0] <= now - WINDOW_S:
            requests.popleft()
        while tokens and tokens[0][0] + 1 <= now - WINDOW_S:
            self.token_total -= tokens.popleft()[1]


#: what a check found: admitted, or which limit refused the request
ADMITTED, PARALLEL, RPM, TPM = 0, 1, 2, 3


@dataclass(slots=True)
class Window:
    """A key's counts at a check: requests and tokens in the last 60 s, and in how many
    seconds the oldest of each leaves the window."""

    requests: int
    request_reset: float
    tokens: int
    token_reset: float


#: a response's headers as the server sends them
WireHeaders = list[tuple[bytes, bytes]]


#: the value of an x-ratelimit-reset-* header for 0, 1, ... 61 seconds
_RESETS = [b"%ds" % seconds for seconds in range(62)]


def _reset(wait: float) -> bytes:
    """An x-ratelimit-reset-* value: ``wait`` seconds, rounded."""
    whole = int(wait + 0.5)
    return _RESETS[whole] if 0 <= whole < 62 else b"%ds" % max(0, whole)


def limit_headers(key: KeyRecord, window: Window) -> WireHeaders:
    """The ``x-ratelimit-*`` headers of an answer to ``key``, ready for the wire."""
    headers: WireHeaders = []
    if key.rpm is not None:
        headers += (
            (b"x-ratelimit-limit-requests", b"%d" % key.rpm),
            (b"x-ratelimit-remaining-requests", b"%d" % max(0, key.rpm - window.requests)),
            (b"x-ratelimit-reset-requests", _reset(window.request_reset)),
        )
    if key.tpm is not None:
        headers += (
            (b"x-ratelimit-limit-tokens", b"%d" % key.tpm),
            (b"x-ratelimit-remaining-tokens", b"%d" % max(0, key.tpm - window.tokens)),
            (b"x-ratelimit-reset-tokens", _reset(window.token_reset)),
        )
    return headers


def refusal(key: KeyRecord, verdict: int, window: Window) -> RateLimitError:
    """The 429 for a request that ``verdict`` refused."""
    if verdict == PARALLEL:
        return RateLimitError(
            f"This key may have {key.max_parallel} requests in flight at once.",
            code="max_parallel_requests_exceeded",
            headers={"retry-after": "1"},
        )
    if verdict == RPM:
        message = f"Rate limit reached: this key may make {key.rpm} requests per minute."
        code, wait = "rate_limit_exceeded", window.request_reset
    else:
        message = f"Rate limit reached: this key may use {key.tpm} tokens per minute."
        code, wait = "tokens_rate_limit_exceeded", window.token_reset
    return RateLimitError(
        message,
        code=code,
        headers={
            "retry-after": str(max(1, math.ceil(wait))),
            **{name.decode(): value.decode() for name, value in limit_headers(key, window)},
        },
    )


def limited(key: KeyRecord) -> bool:
    return key.rpm is not None or key.tpm is not None or key.max_parallel is not None


class KeyLimiter:
    """The limits of the virtual keys in this process, checked when a request is admitted."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._usage: dict[str, _Usage] = {}

    def admit(self, key: KeyRecord) -> WireHeaders:
        """Count a request of ``key``, or raise the 429 that refuses it; the rate-limit
        headers of its answer."""
        rpm, tpm, parallel = key.rpm, key.tpm, key.max_parallel
        if rpm is None and tpm is None and parallel is None:
            return []
        now = self._clock()
        usage = self._usage.get(key.digest)
        if usage is None:
            usage = self._usage[key.digest] = _Usage()
        usage.expire(now)
        requests = usage.requests
        if (
            (parallel is not None and usage.in_flight >= parallel)
            or (rpm is not None and len(requests) >= rpm)
            or (tpm is not None and usage.token_total >= tpm)
        ):
            raise self._refusal(key, usage, now)
        usage.in_flight += 1
        if rpm is not None:
            requests.append(now)
        return limit_headers(key, usage.window(now))

    @staticmethod
    def _refusal(key: KeyRecord, usage: _Usage, now: float) -> RateLimitError:
        """The 429 of a request :meth:`admit` refuses (nothing counted)."""
        if key.max_parallel is not None and usage.in_flight >= key.max_parallel:
            verdict = PARALLEL
        elif key.rpm is not None and len(usage.requests) >= key.rpm:
            verdict = RPM
        else:
            verdict = TPM
        return refusal(key, verdict, usage.window(now))

    def done(self, key: KeyRecord, tokens: int) -> None:
        """A request admitted by :meth:`admit` ended, having used ``tokens``."""
        usage = self._usage.get(key.digest)
        if usage is None:
            return
        usage.in_flight -= 1
        if tokens > 0 and key.tpm is not None:
            second = int(self._clock())
            buckets = usage.tokens
            if buckets and buckets[-1][0] == second:
                buckets[-1][1] += tokens
            else:
                buckets.append([second, tokens])
            usage.token_total += tokens
