"""The usage ledger: one row per request (when, which key, which model and deployment, tokens,
cost, status, latency, time to first token; never prompt or answer text) and a daily rollup per
(day, key, model) that ``GET /usage`` reads.

The request path only appends a row to a list in memory (:meth:`UsageLedger.add`); a background
task hands the rows over every ``storage.refresh_s`` (:meth:`UsageLedger.flush`) to the
serving process's writer process (:mod:`interference.store.ledger_writer`), which writes each
batch with the rollup and each key's ``spend`` in one transaction (:func:`write_rows`) and
removes rows older than ``usage.retention_days`` a few hundred at a time. So a crash loses at
most the rows of the last ``storage.refresh_s`` seconds; a shutdown loses none (the app flushes
on its way out).

A batch goes into a temporary table of the connection, 64 rows per statement, and three
set-based statements copy it into the ledger and sum it into the rollup and the keys' spend, in
the database's own code. Summing in Python and writing row by row took 9-13 µs of CPU a row and
slowed a 2-core gateway's requests by a quarter at 6,000 requests/s (``bench/README.md``,
"Virtual keys").
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any, NamedTuple

from interference.store.database import Database, Session

if TYPE_CHECKING:
    from interference.store.ledger_writer import LedgerWriter

_PRUNE_BATCH = 500


class UsageRow(NamedTuple):
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


#: a row as the serving process keeps it: a plain tuple in :class:`UsageRow`'s order (a
#: NamedTuple is made and pickled by Python code: 0.8 µs more a row)
Row = tuple[Any, ...]


class Written(NamedTuple):
    """What a flush wrote: rows, and the cost they added to each key's spend."""

    rows: int
    costs: dict[str, float]


def key_costs(rows: Sequence[Sequence[Any]]) -> dict[str, float]:
    """The cost of ``rows`` per key digest (keys that spent something)."""
    costs: dict[str, float] = {}
    for row in rows:
        digest, cost = row[2], row[8]
        if digest and cost:
            costs[digest] = costs.get(digest, 0.0) + cost
    return costs


def day_of(moment: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(moment))


class UsageLedger:
    """Rows waiting in memory, handed to the writer process in batches."""

    def __init__(self, writer: LedgerWriter, retention_days: float) -> None:
        self.writer = writer
        self.retention_days = retention_days
        self._pending: list[Row] = []
        self.written = 0

    def add(self, row: Row) -> None:
        """Keep a row for the next flush (memory only: the request path)."""
        self._pending.append(row)

    @property
    def pending(self) -> int:
        """Rows not confirmed written yet."""
        return len(self._pending) + self.writer.waiting

    async def flush(self) -> Written:
        """Write the pending rows, their rollup and the keys' spend, and prune old rows; what
        was written (the rows of earlier flushes the writer could not write as well: it keeps
        them)."""
        rows, self._pending = self._pending, []
        if not rows and not self.writer.started:
            return Written(0, {})  # a process that never had a row starts no writer
        written = await self.writer.write(rows, time.time() - self.retention_days * 86400)
        self.written += written.rows
        return written

    async def close(self) -> None:
        await self.writer.close()


async def usage_totals(
    database: Database, since: float, until: float, key_digest: str | None
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

    return await database.run(read)


#: the columns of a row, in UsageRow's order, with their types
_COLUMNS = [
    ("at", "DOUBLE PRECISION"), ("request_id", "TEXT"), ("key_digest", "TEXT"), ("model", "TEXT"),
    ("deployment", "TEXT"), ("prompt_tokens", "BIGINT"), ("cached_tokens", "BIGINT"),
    ("completion_tokens", "BIGINT"), ("cost", "DOUBLE PRECISION"), ("status", "INTEGER"),
    ("ms", "DOUBLE PRECISION"), ("ttft_ms", "DOUBLE PRECISION"),
]  # fmt: skip
_NAMES = ", ".join(name for name, _ in _COLUMNS)
_BATCH_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS usage_batch ("
    + ", ".join(f"{name} {kind}" for name, kind in _COLUMNS)
    + ")"
)
#: rows per INSERT into the batch table: a statement per row cost the driver more than the rows
#: (and, in a thread of the serving process, as it was, a hand-over of Python's global lock
#: each); 1,024 a statement measured no better
_ROWS_PER_INSERT = 64


def _insert_batch(rows: int) -> str:
    one = f"({', '.join('?' for _ in _COLUMNS)})"
    return f"INSERT INTO usage_batch VALUES {', '.join(one for _ in range(rows))}"


_INSERT_FULL = _insert_batch(_ROWS_PER_INSERT)


def _fill_batch(session: Session, rows: Sequence[Sequence[Any]]) -> None:
    """Put ``rows`` into the batch table, :data:`_ROWS_PER_INSERT` per statement."""
    size = _ROWS_PER_INSERT
    whole = len(rows) - len(rows) % size
    flat = chain.from_iterable
    session.executemany(
        _INSERT_FULL, [list(flat(rows[i : i + size])) for i in range(0, whole, size)]
    )
    if whole < len(rows):
        rest = rows[whole:]
        session.execute(_insert_batch(len(rest)), list(flat(rest)))


def write_rows(
    session: Session,
    rows: Sequence[Sequence[Any]],
    oldest: float,
    batch: tuple[str, int] | None = None,
) -> None:
    """One transaction: the rows, the rollup and the keys' spend, and a batch of old rows
    removed. The rollup and the spend are summed per group and written in a fixed order (by
    day, key, model; by key), so that replicas writing at once never deadlock. ``batch``:
    (sender, number) of a writer's batch (:mod:`interference.store.ledger_writer`), written
    unless that sender's batch of this number or a later one was."""
    with session.transaction():
        if batch is not None and _written_before(session, *batch, oldest):
            return
        if rows:
            session.execute(_BATCH_TABLE)
            _fill_batch(session, rows)
            session.execute(f"INSERT INTO usage ({_NAMES}) SELECT {_NAMES} FROM usage_batch")
            session.execute(
                "INSERT INTO usage_daily (day, key_digest, model, requests, errors, "
                "prompt_tokens, cached_tokens, completion_tokens, cost) "
                f"SELECT {session.day_of('at')}, key_digest, model, COUNT(*), "
                "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), SUM(prompt_tokens), "
                "SUM(cached_tokens), SUM(completion_tokens), SUM(cost) FROM usage_batch "
                "WHERE 1 = 1 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 "
                "ON CONFLICT (day, key_digest, model) DO UPDATE SET "
                "requests = usage_daily.requests + excluded.requests, "
                "errors = usage_daily.errors + excluded.errors, "
                "prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens, "
                "cached_tokens = usage_daily.cached_tokens + excluded.cached_tokens, "
                "completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens, "
                "cost = usage_daily.cost + excluded.cost"
            )
            session.execute(
                "UPDATE keys SET spend = keys.spend + spent.cost FROM (SELECT key_digest, "
                "SUM(cost) AS cost FROM usage_batch WHERE cost > 0 GROUP BY key_digest "
                "ORDER BY key_digest) AS spent WHERE keys.digest = spent.key_digest"
            )
            session.execute("DELETE FROM usage_batch")
        session.execute(
            "DELETE FROM usage WHERE id IN (SELECT id FROM usage WHERE at < ? LIMIT ?)",
            (oldest, _PRUNE_BATCH),
        )


def _written_before(session: Session, sender: str, number: int, oldest: float) -> bool:
    """Whether ``sender``'s batch ``number`` was committed already; else it is noted as this
    transaction's (and the notes of senders gone since ``oldest`` are removed)."""
    last = session.execute("SELECT seq FROM usage_batches WHERE sender = ?", (sender,))
    if last and last[0][0] >= number:
        return True
    session.execute(
        "INSERT INTO usage_batches (sender, seq, at) VALUES (?, ?, ?) ON CONFLICT (sender) "
        "DO UPDATE SET seq = excluded.seq, at = excluded.at",
        (sender, number, time.time()),
    )
    session.execute("DELETE FROM usage_batches WHERE at < ?", (oldest,))
    return False
