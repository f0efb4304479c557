"""The key store and the usage ledger on each database they support: the SQLite file and a real
PostgreSQL server (tests/support/services.py; the fixtures: tests/integration/conftest.py).
Same calls, same answers; and what only a server has: a connection that drops and comes back,
and replicas migrating at once."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import pytest

from interference.config import ConfigError, StorageConfig
from interference.errors import InvalidRequestError
from interference.store.database import Database, open_database
from interference.store.keys import KeyStore
from interference.store.ledger_writer import LedgerWriter
from interference.store.postgres import PostgresDatabase
from interference.store.usage import UsageLedger, UsageRow, usage_totals
from tests.support.services import Postgres


def row(key: str, cost: float, status: int = 200, at: float | None = None) -> UsageRow:
    return UsageRow(
        at=time.time() if at is None else at,
        request_id="r",
        key_digest=key,
        model="m",
        deployment="p/m",
        prompt_tokens=10,
        cached_tokens=4,
        completion_tokens=5,
        cost=cost,
        status=status,
        ms=12.5,
        ttft_ms=3.0,
    )


def test_keys_are_created_changed_seen_elsewhere_and_revoked(
    database: Database, storage: StorageConfig
) -> None:
    store = KeyStore(database)
    store.load()

    async def work() -> None:
        key, record = await store.generate(
            {"key_alias": "team-a", "models": ["gpt-*"], "max_budget": 5.0, "rpm_limit": 10}
        )
        assert key.startswith("sk-")
        with pytest.raises(InvalidRequestError) as taken:
            await store.generate({"key_alias": "team-a"})
        assert taken.value.code == "alias_taken"
        changed = await store.update(record, {"tpm_limit": 1000, "blocked": True})
        assert changed.blocked

        other = KeyStore(open_database(storage))  # another replica, or `interference keys`
        other.load()
        seen = other.find(key)
        assert seen is not None
        assert (seen.alias, seen.models, seen.max_budget) == ("team-a", ["gpt-*"], 5.0)
        assert (seen.rpm, seen.tpm, seen.blocked) == (10, 1000, True)
        seen.last_used_at = 1234.5  # as the guard notes a request
        await other.refresh()  # writes when it was last used
        await store.refresh()
        assert store.find(key).last_used_at == 1234.5  # type: ignore[union-attr]
        await other.delete([seen])
        await store.refresh()
        assert store.find(key) is None
        other.database.close()

    asyncio.run(work())


def test_a_budget_period_is_reset_once_by_replicas_racing(
    database: Database, storage: StorageConfig, writer_where: dict[str, Any]
) -> None:
    first = KeyStore(database)
    first.load()
    second = KeyStore(open_database(storage))

    async def work() -> None:
        _, record = await first.generate({"max_budget": 1.0, "budget_duration": "1h"}, now=0.0)
        ledger = UsageLedger(LedgerWriter(writer_where, timeout_s=20), retention_days=90)
        ledger.add(row(record.digest, 0.25))
        await ledger.flush()
        await ledger.close()
        second.load()
        due = record.budget_reset_at or 0
        assert await first.reset_budgets(due + 1) == 1
        await second.reset_budgets(due + 1)  # saw the old period: its reset changes nothing
        await first.refresh()
        after = first.resolve(record.digest)
        assert after is not None
        assert after.spend == 0
        assert after.budget_reset_at == due + 3600

    asyncio.run(work())
    second.database.close()


def test_the_ledger_writes_rows_rollup_and_spend_and_prunes(
    database: Database, writer_where: dict[str, Any]
) -> None:
    store = KeyStore(database)
    store.load()

    async def work() -> list[dict[str, object]]:
        _, record = await store.generate({})
        ledger = UsageLedger(LedgerWriter(writer_where, timeout_s=20), retention_days=1)
        for _ in range(3):
            ledger.add(row(record.digest, 0.5))
        ledger.add(row(record.digest, 0.0, status=429))
        ledger.add(row(record.digest, 0.5, at=time.time() - 3 * 86400))  # past retention
        await ledger.flush()
        await store.refresh()
        assert store.resolve(record.digest).spend == pytest.approx(2.0)  # type: ignore[union-attr]
        await ledger.flush()  # prunes the old row; the rollup keeps it
        await ledger.close()
        count = await database.run(lambda s: s.execute("SELECT COUNT(*) FROM usage")[0][0])
        assert count == 4
        return await usage_totals(database, time.time() - 5 * 86400, time.time(), record.digest)

    totals = asyncio.run(work())
    today = [t for t in totals if t["requests"] == 4]
    assert len(totals) == 2
    assert len(today) == 1
    assert today[0]["errors"] == 1
    assert today[0]["prompt_tokens"] == 40
    assert today[0]["cached_tokens"] == 16
    assert today[0]["cost"] == pytest.approx(1.5)


def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    versions: list[int] = []
    errors: list[BaseException] = []

    def start() -> None:
        database = PostgresDatabase(postgres_url)
        try:
            versions.append(database.open())
        except BaseException as exc:
            errors.append(exc)
        finally:
            database.close()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert versions == [3, 3, 3, 3]


def test_a_lost_connection_fails_a_flush_keeps_its_rows_and_reconnects(
    postgres_url: str, postgres_server: Postgres
) -> None:
    database = PostgresDatabase(postgres_url, timeout_s=3)
    database.open()
    ledger = UsageLedger(LedgerWriter({"url": postgres_url, "timeout_s": 3}, 13), 90)

    async def work() -> None:
        ledger.add(row("", 0.0))
        await ledger.flush()
        postgres_server.stop()
        ledger.add(row("", 0.0))
        ledger.add(row("", 0.0))
        started = time.perf_counter()
        with pytest.raises(Exception):  # noqa: B017, PT011 - the driver's connection error
            await ledger.flush()
        assert time.perf_counter() - started < 10
        assert ledger.pending == 2  # kept for the next try
        postgres_server.start()
        await ledger.flush()  # the writer's new connection
        await ledger.close()
        fresh = PostgresDatabase(postgres_url)  # this test's own connection was cut as well
        fresh.open()
        count = await fresh.run(lambda s: s.execute("SELECT COUNT(*) FROM usage")[0][0])
        fresh.close()
        assert count == 3

    try:
        asyncio.run(work())
    finally:
        if postgres_server.process is None:
            postgres_server.start()
        database.close()


def test_a_database_that_cannot_be_reached_stops_the_start_in_one_line() -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    storage = StorageConfig.model_validate(
        {"url": f"postgresql://app:s3cret-pw@127.0.0.1:{port}/gateway", "timeout_s": 2}
    )
    with pytest.raises(ConfigError) as failed:
        open_database(storage)
    message = str(failed.value)
    assert message.startswith(f"cannot open the database postgresql://app@127.0.0.1:{port}/gateway")
    assert "s3cret-pw" not in message  # never the password
    assert "refused" in message
