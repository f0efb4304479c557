"""The usage ledger: one row per request (when, which key, which model and deployment, tokens,
cost, status, latency, time to first token; never prompt or answer text) and a daily rollup per
(day, key, model) that ``GET /usage`` reads.

The request path only appends a row to a list in memory (:meth:`UsageLedger.add`); a background
task writes the rows every ``storage.refresh_s`` in one transaction (:meth:`UsageLedger.flush`),
together with the rollup and each key's ``spend``, and removes rows older than
``usage.retention_days`` a few hundred at a time. So a crash loses at most the rows of the last
``storage.refresh_s`` seconds; a shutdown loses none (the app flushes on its way out).
"""

from __future__ import annotations

import time
from dataclasses import astuple, dataclass
from typing import Any

from interference.store.database import Database, Session

_PRUNE_BATCH = 500


@dataclass
class UsageRow:
    at: float
    request_id: str
    key_digest: str  # "" for a request without a virtual key
    model: str
    deployment: str | None
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    cost: float
    status: int
    ms: float
    ttft_ms: float | None


def day_of(moment: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(moment))


class UsageLedger:
    """Rows waiting in memory, written in batches."""

    def __init__(self, database: Database, retention_days: float) -> None:
        self.database = database
        self.retention_days = retention_days
        self._pending: list[UsageRow] = []
        self.written = 0

    def add(self, row: UsageRow) -> None:
        """Keep a row for the next flush (memory only: the request path)."""
        self._pending.append(row)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> list[UsageRow]:
        """Write the pending rows, their rollup and the keys' spend; prune old rows; the rows
        written."""
        rows, self._pending = self._pending, []
        oldest = time.time() - self.retention_days * 86400
        try:
            await self.database.run(lambda session: _write(session, rows, oldest))
        except BaseException:
            self._pending[:0] = rows  # kept for the next try
            raise
        self.written += len(rows)
        return rows

    def flush_now(self) -> int:
        """:meth:`flush` for callers outside an event loop (shutdown, tests)."""
        rows, self._pending = self._pending, []
        oldest = time.time() - self.retention_days * 86400
        self.database.call(lambda session: _write(session, rows, oldest))
        self.written += len(rows)
        return len(rows)

    async def totals(
        self, since: float, until: float, key_digest: str | None
    ) -> list[dict[str, Any]]:
        """The rollup's rows from day ``since`` to day ``until`` (inclusive), of one key or
        all, summed per (day, key, model)."""
        query = (
            "SELECT day, key_digest, model, requests, errors, prompt_tokens, cached_tokens, "
            "completion_tokens, cost FROM usage_daily WHERE day >= ? AND day <= ?"
        )
        params: list[Any] = [day_of(since), day_of(until)]
        if key_digest is not None:
            query += " AND key_digest = ?"
            params.append(key_digest)
        query += " ORDER BY day, key_digest, model"

        def read(session: Session) -> list[dict[str, Any]]:
            names = [
                "day", "key", "model", "requests", "errors", "prompt_tokens", "cached_tokens",
                "completion_tokens", "cost",
            ]  # fmt: skip
            return [dict(zip(names, row, strict=True)) for row in session.execute(query, params)]

        return await self.database.run(read)


def _write(session: Session, rows: list[UsageRow], oldest: float) -> None:
    """One transaction: the rows, the rollup and the keys' spend, and a batch of old rows
    removed. The rollup and the spend are summed here first, and written in a fixed order (by
    day, key, model; by key), so that replicas writing at once never deadlock."""
    daily: dict[tuple[str, str, str], list[float]] = {}
    spend: dict[str, float] = {}
    for r in rows:
        sums = daily.setdefault((day_of(r.at), r.key_digest, r.model), [0, 0, 0, 0, 0, 0.0])
        sums[0] += 1
        sums[1] += int(r.status >= 400)
        sums[2] += r.prompt_tokens
        sums[3] += r.cached_tokens
        sums[4] += r.completion_tokens
        sums[5] += r.cost
        if r.key_digest and r.cost:
            spend[r.key_digest] = spend.get(r.key_digest, 0.0) + r.cost
    with session.transaction():
        session.executemany(
            "INSERT INTO usage (at, request_id, key_digest, model, deployment, "
            "prompt_tokens, cached_tokens, completion_tokens, cost, status, ms, ttft_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [astuple(row) for row in rows],
        )
        session.executemany(
            "INSERT INTO usage_daily VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (day, key_digest, model) DO UPDATE SET "
            "requests = usage_daily.requests + excluded.requests, "
            "errors = usage_daily.errors + excluded.errors, "
            "prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens, "
            "cached_tokens = usage_daily.cached_tokens + excluded.cached_tokens, "
            "completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens, "
            "cost = usage_daily.cost + excluded.cost",
            [
                (*group, int(s[0]), int(s[1]), int(s[2]), int(s[3]), int(s[4]), s[5])
                for group, s in sorted(daily.items())
            ],
        )
        session.executemany(
            "UPDATE keys SET spend = spend + ? WHERE digest = ?",
            [(cost, digest) for digest, cost in sorted(spend.items())],
        )
        session.execute(
            "DELETE FROM usage WHERE id IN (SELECT id FROM usage WHERE at < ? LIMIT ?)",
            (oldest, _PRUNE_BATCH),
        )
