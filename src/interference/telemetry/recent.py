"""The last 15 minutes in 10-second buckets, for the web chat's live charts
(``GET /v1/status/recent``): requests, errors, output tokens and time to first token per
model, and errors per deployment.

A ring of :data:`BUCKETS` buckets, indexed by the 10-second slot of the wall clock; a request
that ends adds to its slot's bucket (a few dictionary updates), and a bucket older than the
window is emptied when its slot comes round again. Time to first token is kept as a histogram
per bucket (the GenAI buckets), so that p50 and p95 come out of any range of buckets, merged
across workers, without keeping every value.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from interference.telemetry.metrics import TTFT_BUCKETS

BUCKET_S = 10
BUCKETS = 90  # 15 minutes

#: per model: requests, errors, output tokens, then the TTFT histogram's counts
_REQUESTS, _ERRORS, _TOKENS, _TTFT = 0, 1, 2, 3


class Recent:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._slots: list[int] = [-1] * BUCKETS  # which 10-second slot each bucket holds
        self._models: list[dict[str, list[int]]] = [{} for _ in range(BUCKETS)]
        self._deployments: list[dict[str, int]] = [{} for _ in range(BUCKETS)]
        self._current: dict[str, list[int]] = {}  # the models of the bucket being filled ...
        self._until = 0.0  # ... until this moment

    def _bucket(self, now: float) -> int:
        slot = int(now // BUCKET_S)
        index = slot % BUCKETS
        if self._slots[index] != slot:  # a new 10 s: the bucket's previous round is gone
            self._slots[index] = slot
            self._models[index] = {}
            self._deployments[index] = {}
            self._until = 0.0  # the cached bucket may be the one just emptied
        return index

    def request(self, model: str, error: bool, output_tokens: int, ttft_s: float | None) -> None:
        """A request for ``model`` ended."""
        now = self._clock()
        if now < self._until:  # most requests: the same bucket as the one before
            models = self._current
        else:
            index = self._bucket(now)
            models = self._current = self._models[index]
            self._until = (self._slots[index] + 1) * BUCKET_S
        row = models.get(model)
        if row is None:
            row = models[model] = [0] * (_TTFT + len(TTFT_BUCKETS) + 1)
        row[_REQUESTS] += 1
        if error:
            row[_ERRORS] += 1
        row[_TOKENS] += output_tokens
        if ttft_s is not None:
            row[_TTFT + bisect_left(TTFT_BUCKETS, ttft_s)] += 1

    def deployment_error(self, deployment: str) -> None:
        """An attempt on ``deployment`` failed."""
        errors = self._deployments[self._bucket(self._clock())]
        errors[deployment] = errors.get(deployment, 0) + 1

    def raw(self) -> dict[str, Any]:
        """The buckets still in the window, as plain data (what workers exchange)."""
        oldest = int(self._clock() // BUCKET_S) - BUCKETS + 1
        return {
            str(slot): {"models": self._models[i], "deployments": self._deployments[i]}
            for i, slot in enumerate(self._slots)
            if slot >= oldest
        }


def merge(raws: list[dict[str, Any]]) -> dict[str, Any]:
    """Several workers' :meth:`Recent.raw`, added up."""
    merged: dict[str, Any] = {}
    for raw in raws:
        for slot, bucket in raw.items():
            into = merged.setdefault(slot, {"models": {}, "deployments": {}})
            for model, row in bucket["models"].items():
                current = into["models"].get(model)
                into["models"][model] = (
                    list(row)
                    if current is None
                    else [a + b for a, b in zip(current, row, strict=True)]
                )
            for name, count in bucket["deployments"].items():
                into["deployments"][name] = into["deployments"].get(name, 0) + count
    return merged


def _quantile(counts: list[int], q: float) -> float | None:
    """The ``q`` quantile of a TTFT histogram, interpolated inside its bucket (seconds)."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            low = TTFT_BUCKETS[i - 1] if i else 0.0
            high = TTFT_BUCKETS[i] if i < len(TTFT_BUCKETS) else TTFT_BUCKETS[-1] * 2
            return low + (high - low) * (rank - seen) / count
        seen += count
    return TTFT_BUCKETS[-1]


def series(raw: dict[str, Any], now: float) -> dict[str, Any]:
    """What the charts draw: one point per bucket of the window, oldest first, with each
    model's requests per second, errors, output tokens per second and p50/p95 time to first
    token (ms), and each deployment's errors."""
    newest = int(now // BUCKET_S)
    points = []
    for slot in range(newest - BUCKETS + 1, newest + 1):
        bucket = raw.get(str(slot), {"models": {}, "deployments": {}})
        models = {}
        for model, row in bucket["models"].items():
            ttft = row[_TTFT:]
            p50, p95 = _quantile(ttft, 0.5), _quantile(ttft, 0.95)
            models[model] = {
                "requests_per_s": row[_REQUESTS] / BUCKET_S,
                "errors": row[_ERRORS],
                "tokens_per_s": row[_TOKENS] / BUCKET_S,
                "ttft_p50_ms": None if p50 is None else round(p50 * 1000, 1),
                "ttft_p95_ms": None if p95 is None else round(p95 * 1000, 1),
            }
        points.append(
            {"t": slot * BUCKET_S, "models": models, "deployments": dict(bucket["deployments"])}
        )
    return {"bucket_s": BUCKET_S, "window_s": BUCKET_S * BUCKETS, "points": points}
