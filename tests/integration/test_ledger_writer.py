"""The usage writer process (store/ledger_writer.py), over its real pipe, on a SQLite file and
on a real PostgreSQL server: rows land once, through a writer that is killed, stopped, signalled
or left by its serving process."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest

from interference.store.database import Database
from interference.store.ledger_writer import LedgerWriteError, LedgerWriter
from interference.store.usage import UsageLedger, UsageRow, Written, write_rows


def rows(count: int, first: int = 0, key: str = "") -> list[UsageRow]:
    return [
        UsageRow(time.time(), f"r{first + i}", key, "m", "p/m", 10, 0, 5, 0.5, 200, 1.0, None)
        for i in range(count)
    ]


def counted(database: Database) -> tuple[int, int, float]:
    """Rows in the ledger, requests and cost in the rollup."""
    ledger = database.call(lambda s: s.execute("SELECT COUNT(*) FROM usage"))[0][0]
    rollup = database.call(lambda s: s.execute("SELECT SUM(requests), SUM(cost) FROM usage_daily"))
    return int(ledger), int(rollup[0][0] or 0), float(rollup[0][1] or 0)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_batches_are_written_by_a_process_of_their_own(
    writer_where: dict[str, Any], database: Database
) -> None:
    async def work() -> None:
        ledger = UsageLedger(LedgerWriter(writer_where, timeout_s=20), 90)
        assert await ledger.flush() == Written(0, {})  # no rows yet: no writer started
        assert ledger.writer is not None
        assert ledger.writer.pid is None
        for row in [*rows(200), *rows(100, first=200, key="k" * 64)]:
            ledger.add(row)
        written = await ledger.flush()
        assert written == Written(300, {"k" * 64: 50.0})  # the spend the keyed rows added
        assert ledger.pending == 0
        pid = ledger.writer.pid
        assert pid is not None
        assert pid != os.getpid()
        await ledger.close()
        assert not alive(pid)

    asyncio.run(work())
    assert counted(database) == (300, 300, 150.0)


def test_a_killed_writer_is_replaced_and_loses_nothing(
    writer_where: dict[str, Any], database: Database
) -> None:
    async def work() -> None:
        writer = LedgerWriter(writer_where, timeout_s=20)
        assert (await writer.write(rows(10), 0.0)).rows == 10
        first = writer.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)  # between two batches
        written = await writer.write(rows(10, first=10), 0.0)
        assert written.rows == 10
        assert writer.pid not in (None, first)
        await writer.close()

    asyncio.run(work())
    assert counted(database) == (20, 20, 10.0)


def test_a_stuck_writer_is_ended_and_its_batch_sent_again_once(
    writer_where: dict[str, Any], database: Database
) -> None:
    async def work() -> None:
        writer = LedgerWriter(writer_where, timeout_s=1.0)
        await writer.write(rows(5), 0.0)
        stuck = writer.pid
        assert stuck is not None
        os.kill(stuck, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(LedgerWriteError, match="did not answer in time"):
            await writer.write(rows(7, first=5), 0.0)
        assert time.monotonic() - started < 10  # 1 s, then the SIGKILL (a stopped one waits)
        assert not alive(stuck)
        assert writer.waiting == 7  # kept
        written = await writer.write(rows(3, first=12), 0.0)
        assert written.rows == 10  # the kept batch first, then the new one
        assert writer.waiting == 0
        await writer.close()

    asyncio.run(work())
    assert counted(database) == (15, 15, 7.5)


def test_a_batch_committed_before_its_writer_died_is_not_counted_twice(
    database: Database,
) -> None:
    batch = [tuple(row) for row in rows(4)]
    for _ in range(2):  # the second time: sent again to a new writer
        database.call(lambda s: write_rows(s, batch, 0.0, ("sender-a", 1)))
    assert counted(database) == (4, 4, 2.0)
    database.call(lambda s: write_rows(s, batch, 0.0, ("sender-b", 1)))  # another process
    database.call(lambda s: write_rows(s, batch, 0.0, ("sender-a", 2)))  # its next batch
    assert counted(database) == (12, 12, 6.0)


def test_the_writer_outlives_signals_and_ends_with_its_input(
    writer_where: dict[str, Any], database: Database
) -> None:
    """Ctrl-C and service managers signal the whole group: the writer keeps going, for the
    serving process's last rows. When that process goes (its end of the pipe closes, as when
    it is killed), the writer writes what it was sent and ends."""

    async def work() -> None:
        writer = LedgerWriter(writer_where, timeout_s=20)
        await writer.write(rows(2), 0.0)
        pid = writer.pid
        assert pid is not None
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
        assert (await writer.write(rows(2, first=2), 0.0)).rows == 2
        assert writer.pid == pid
        process = writer._process
        assert process is not None
        assert process.stdin is not None
        process.stdin.close()  # as the kernel does for a serving process that died
        assert await asyncio.wait_for(process.wait(), 10) == 0

    asyncio.run(work())
    assert counted(database) == (4, 4, 2.0)
