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
        """The counts at ``now`` (the old entries removed: KeyLimiter.admit)."""
        requests, tokens = self.requests, self.tokens
        return Window(
            len(requests),
            requests[0] + WINDOW_S - now if requests else 0.0,
            self.token_total,
            tokens[0][0] + 1 + WINDOW_S - now if tokens else 0.0,
        )


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


#: a response's ``x-ratelimit-*`` headers as lines of its head (``name: value\r\n`` each): an
#: HTTP/1.1 server that takes lines it need not check adds them at once
#: (``interference.api.guard.HEAD_LINES``); :func:`header_pairs` for any other ASGI server
HeadLines = bytes

_REQUEST_LINES = (
    b"x-ratelimit-limit-requests: %d\r\nx-ratelimit-remaining-requests: %d\r\n"
    b"x-ratelimit-reset-requests: %ds\r\n"
)
_TOKEN_LINES = (
    b"x-ratelimit-limit-tokens: %d\r\nx-ratelimit-remaining-tokens: %d\r\n"
    b"x-ratelimit-reset-tokens: %ds\r\n"
)
_BOTH_LINES = _REQUEST_LINES + _TOKEN_LINES


def limit_headers(key: KeyRecord, window: Window) -> HeadLines:
    """The ``x-ratelimit-*`` headers of an answer to ``key``, as lines of the response's head
    (the resets in whole seconds, rounded)."""
    return limit_lines(
        key, window.requests, window.request_reset, window.tokens, window.token_reset
    )


def limit_lines(
    key: KeyRecord, requests: int, request_reset: float, tokens: int, token_reset: float
) -> HeadLines:
    """:func:`limit_headers` of the counts themselves: one formatting of bytes, for every
    request of a limited key."""
    rpm, tpm = key.rpm, key.tpm
    if rpm is not None:
        if tpm is None:
            return _REQUEST_LINES % (rpm, max(0, rpm - requests), max(0, int(request_reset + 0.5)))
        return _BOTH_LINES % (
            rpm,
            max(0, rpm - requests),
            max(0, int(request_reset + 0.5)),
            tpm,
            max(0, tpm - tokens),
            max(0, int(token_reset + 0.5)),
        )
    if tpm is not None:
        return _TOKEN_LINES % (tpm, max(0, tpm - tokens), max(0, int(token_reset + 0.5)))
    return b""


def header_pairs(lines: HeadLines) -> list[tuple[bytes, bytes]]:
    """:func:`limit_headers`' lines as ASGI header pairs."""
    pairs = []
    for line in lines.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b": ")
            pairs.append((name, value))
    return pairs


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
            **{
                name.decode(): value.decode()
                for name, value in header_pairs(limit_headers(key, window))
            },
        },
    )


def limited(key: KeyRecord) -> bool:
    return key.rpm is not None or key.tpm is not None or key.max_parallel is not None


class KeyLimiter:
    """The limits of the virtual keys in this process, checked when a request is admitted."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._usage: dict[str, _Usage] = {}

    def admit(self, key: KeyRecord) -> HeadLines:
        """Count a request of ``key``, or raise the 429 that refuses it; the rate-limit
        headers of its answer."""
        rpm, tpm, parallel = key.rpm, key.tpm, key.max_parallel
        if rpm is None and tpm is None and parallel is None:
            return b""
        now = self._clock()
        usage = self._usage.get(key.digest)
        if usage is None:
            usage = self._usage[key.digest] = _Usage()
        requests, tokens = usage.requests, usage.tokens
        horizon = now - WINDOW_S  # what leaves the window (inline: every request)
        while requests and requests[0] <= horizon:
            requests.popleft()
        while tokens and tokens[0][0] + 1 <= horizon:
            usage.token_total -= tokens.popleft()[1]
        if (
            (parallel is not None and usage.in_flight >= parallel)
            or (rpm is not None and len(requests) >= rpm)
            or (tpm is not None and usage.token_total >= tpm)
        ):
            raise self._refusal(key, usage, now)
        usage.in_flight += 1
        if rpm is not None:
            requests.append(now)
        return limit_lines(
            key,
            len(requests),
            requests[0] - horizon if requests else 0.0,
            usage.token_total,
            tokens[0][0] + 1 - horizon if tokens else 0.0,
        )

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
