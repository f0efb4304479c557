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

import sqlite3
import time
from dataclasses import astuple, dataclass
from typing import Any

from interference.store.database import Database

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
            await self.database.run(lambda connection: _write(connection, rows, oldest))
        except BaseException:
            self._pending[:0] = rows  # kept for the next try
            raise
        self.written += len(rows)
        return rows

    def flush_now(self) -> int:
        """:meth:`flush` for callers outside an event loop (shutdown, tests)."""
        rows, self._pending = self._pending, []
        oldest = time.time() - self.retention_days * 86400
        self.database.call(lambda connection: _write(connection, rows, oldest))
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

        def read(connection: sqlite3.Connection) -> list[dict[str, Any]]:
            names = [
                "day", "key", "model", "requests", "errors", "prompt_tokens", "cached_tokens",
                "completion_tokens", "cost",
            ]  # fmt: skip
            return [dict(zip(names, row, strict=True)) for row in connection.execute(query, params)]

        return await self.database.run(read)


def _write(connection: sqlite3.Connection, rows: list[UsageRow], oldest: float) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        if rows:
            connection.executemany(
                "INSERT INTO usage (at, request_id, key_digest, model, deployment, "
                "prompt_tokens, cached_tokens, completion_tokens, cost, status, ms, ttft_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [astuple(row) for row in rows],
            )
            connection.executemany(
                "INSERT INTO usage_daily VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?) "
                "ON CONFLICT (day, key_digest, model) DO UPDATE SET "
                "requests = requests + 1, errors = errors + excluded.errors, "
                "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
                "cached_tokens = cached_tokens + excluded.cached_tokens, "
                "completion_tokens = completion_tokens + excluded.completion_tokens, "
                "cost = cost + excluded.cost",
                [
                    (
                        day_of(r.at),
                        r.key_digest,
                        r.model,
                        int(r.status >= 400),
                        r.prompt_tokens,
                        r.cached_tokens,
                        r.completion_tokens,
                        r.cost,
                    )
                    for r in rows
                ],
            )
            connection.executemany(
                "UPDATE keys SET spend = spend + ? WHERE digest = ?",
                [(r.cost, r.key_digest) for r in rows if r.key_digest and r.cost],
            )
        connection.execute(
            "DELETE FROM usage WHERE id IN (SELECT id FROM usage WHERE at < ? LIMIT ?)",
            (oldest, _PRUNE_BATCH),
        )
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
