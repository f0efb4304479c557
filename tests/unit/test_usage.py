"""The usage ledger (store/usage.py, api/accounting.py, GET /usage): one row per request with
its cost and no prompt text, a daily rollup per key and model, each key's spend, rows written
in batches and at shutdown, old rows pruned."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from interference import cli
from interference.api.app import create_app
from interference.api.record import RequestRecord
from interference.config import Config
from interference.errors import BudgetExceededError
from interference.store.database import SQLiteDatabase
from interference.store.ledger_writer import LedgerWriter
from interference.store.usage import UsageLedger, UsageRow
from tests.support.fakes import FakeProvider
from tests.unit.test_virtual_keys import ADMIN, MASTER, bearer

SECRET_PROMPT = "the-secret-prompt-text-42"
ASK = {"model": "fake-model", "messages": [{"role": "user", "content": SECRET_PROMPT}]}


def app_client(db: Path, refresh_s: float = 60) -> TestClient:
    config = Config.model_validate(
        {
            "server": {"master_key": MASTER},
            "storage": {"path": str(db), "refresh_s": refresh_s},
            "prices": {"fake-model": {"input": 1000, "output": 2000}},  # USD per 1M tokens
        }
    )
    return TestClient(create_app(config, providers=[FakeProvider()]), raise_server_exceptions=False)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "usage.db"


@pytest.fixture
def client(db: Path) -> Iterator[TestClient]:
    with app_client(db) as test_client:
        yield test_client


def key(client: TestClient, alias: str) -> str:
    created: dict[str, Any] = client.post(
        "/key/generate", json={"key_alias": alias}, headers=ADMIN
    ).json()
    return str(created["key"])


def test_each_request_is_a_row_with_its_cost_and_the_keys_spend(
    client: TestClient, db: Path
) -> None:
    alice, bob = key(client, "alice"), key(client, "bob")
    answers = [
        client.post("/v1/chat/completions", json=ASK, headers=bearer(alice)) for _ in range(2)
    ]
    answers.append(client.post("/v1/chat/completions", json=ASK, headers=bearer(bob)))
    usage = answers[0].json()["usage"]
    each = (usage["prompt_tokens"] * 1000 + usage["completion_tokens"] * 2000) / 1e6
    assert each > 0
    everything = client.get("/usage", headers=ADMIN).json()
    by_key = {row["key"]: row for row in everything["data"]}
    assert by_key["alice"]["requests"] == 2
    assert by_key["alice"]["cost"] == pytest.approx(2 * each)
    assert by_key["bob"]["requests"] == 1
    assert by_key["bob"]["model"] == "fake-model"
    assert everything["total"]["requests"] == 3
    assert everything["total"]["prompt_tokens"] == 3 * usage["prompt_tokens"]
    own = client.get("/usage", headers=bearer(bob)).json()
    assert [row["key"] for row in own["data"]] == ["bob"]
    info = client.get("/key/info", headers=bearer(alice)).json()["info"]
    assert info["spend"] == pytest.approx(2 * each)
    rows = sqlite3.connect(db).execute("SELECT model, status, ms, cost FROM usage").fetchall()
    assert len(rows) == 3
    assert all(r[0] == "fake-model" and r[1] == 200 and r[2] > 0 for r in rows)
    for stored in db.parent.iterdir():  # never the prompt
        assert SECRET_PROMPT.encode() not in stored.read_bytes()


def test_rows_of_finished_requests_are_written_at_shutdown(db: Path) -> None:
    with app_client(db) as client:  # refresh_s 60: only the shutdown writes them
        alice = key(client, "alice")
        for _ in range(5):
            client.post("/v1/chat/completions", json=ASK, headers=bearer(alice))
    count = sqlite3.connect(db).execute("SELECT COUNT(*) FROM usage").fetchone()[0]
    assert count == 5
    spend = sqlite3.connect(db).execute("SELECT spend FROM keys").fetchone()[0]
    assert spend > 0


def test_usage_dates_and_refusals(client: TestClient) -> None:
    bad = client.get("/usage?start_date=yesterday", headers=ADMIN)
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "start_date"
    empty = client.get("/usage?start_date=2020-01-01&end_date=2020-01-31", headers=ADMIN).json()
    assert empty["data"] == []
    assert empty["total"]["requests"] == 0


def test_old_rows_are_pruned_in_batches_and_the_rollup_stays(tmp_path: Path) -> None:
    database = SQLiteDatabase(tmp_path / "prune.db")
    database.open()
    ledger = UsageLedger(LedgerWriter({"path": str(tmp_path / "prune.db")}, timeout_s=20), 1)
    old = time.time() - 3 * 86400
    for i in range(600):
        ledger.add(UsageRow(old, f"r{i}", "", "m", None, 1, 0, 1, 0.0, 200, 1.0, None))
    ledger.add(UsageRow(time.time(), "new", "", "m", None, 1, 0, 1, 0.0, 200, 1.0, None))

    def count() -> int:
        return int(database.call(lambda c: c.execute("SELECT COUNT(*) FROM usage")[0][0]))

    async def work() -> tuple[int, int]:
        await ledger.flush()  # writes 601, prunes the first 500 old ones
        first = count()
        await ledger.flush()  # the next flush prunes the rest
        await ledger.close()
        return first, count()

    assert asyncio.run(work()) == (101, 1)
    rollup = database.call(lambda c: c.execute("SELECT SUM(requests) FROM usage_daily")[0])
    assert rollup == (601,)
    database.close()


def test_a_stream_is_counted_with_its_prompt_and_completion(client: TestClient, db: Path) -> None:
    alice = key(client, "alice")
    streamed = client.post(
        "/v1/chat/completions", json={**ASK, "stream": True}, headers=bearer(alice)
    )
    assert streamed.status_code == 200
    whole = client.post("/v1/chat/completions", json=ASK, headers=bearer(alice)).json()["usage"]
    data = client.get("/usage", headers=ADMIN).json()["data"]
    assert data[0]["requests"] == 2
    assert data[0]["prompt_tokens"] == 2 * whole["prompt_tokens"]  # the stream's counted too
    assert data[0]["completion_tokens"] == 2 * whole["completion_tokens"]


def test_a_budget_refuses_what_could_pass_it_and_concurrent_requests_cannot_overshoot(
    client: TestClient,
) -> None:
    created = client.post("/key/generate", json={"max_budget": 0.2}, headers=ADMIN).json()
    limited = bearer(created["key"])
    body = {**ASK, "max_tokens": 10}
    size = len(orjson.dumps(body))
    reservation = (size * 1000 + 10 * 2000) / 1e6  # bytes as tokens at 1000, 10 at 2000
    statuses = []
    for _ in range(40):
        statuses.append(
            client.post(
                "/v1/chat/completions",
                content=orjson.dumps(body),
                headers={**limited, "content-type": "application/json"},
            ).status_code
        )
    assert statuses[0] == 200
    assert 429 in statuses
    refused = client.post("/v1/chat/completions", json=body, headers=limited).json()["error"]
    assert refused["code"] == "budget_exceeded"
    assert refused["type"] == "insufficient_quota"
    spend = client.get("/key/info", headers=limited).json()["info"]["spend"]
    assert spend <= 0.2  # never past the budget
    assert spend + reservation > 0.2  # and refused only when the next one might pass it

    # many requests in flight at once: each holds its worst case until it ends
    accounting = client.app.state.interference.accounting  # type: ignore[attr-defined]
    keys = client.app.state.interference.keys  # type: ignore[attr-defined]
    fresh = client.post("/key/generate", json={"max_budget": 1.0}, headers=ADMIN).json()
    record_key = keys.resolve(fresh["key"])
    model = client.app.state.interference.router.resolve("fake-model")  # type: ignore[attr-defined]

    async def one(i: int) -> int:
        request = RequestRecord(f"r{i}", "POST", "/", "c", 0.0, None, virtual_key=record_key)
        request.body_bytes = 100
        try:
            await accounting.reserve(request, model, 10)
        except BudgetExceededError:
            return 0
        return 1

    async def burst() -> int:  # none has ended yet
        return sum(await asyncio.gather(*(one(i) for i in range(100))))

    admitted = asyncio.run(burst())
    each = (100 * 1000 + 10 * 2000) / 1e6
    assert admitted == int(1.0 // each)  # 8 of 100: their worst cases fit in 1 USD


def test_count_tokens_holds_no_budget(client: TestClient) -> None:
    created = client.post("/key/generate", json={"max_budget": 0.2}, headers=ADMIN).json()
    headers = {**bearer(created["key"]), "anthropic-version": "2023-06-01"}
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "Hi"}]}
    for _ in range(5):
        counted = client.post("/v1/messages/count_tokens", json=body, headers=headers)
        assert counted.status_code == 200
    accounting = client.app.state.interference.accounting  # type: ignore[attr-defined]
    assert accounting.counters.held(created["token"]) == 0.0
    answer = client.post("/v1/chat/completions", json={**ASK, "max_tokens": 10}, headers=headers)
    assert answer.status_code == 200
    client.get("/key/info", headers=headers)  # a read: the batch of ended requests is counted
    assert accounting.counters.held(created["token"]) == pytest.approx(0.0)  # and released


def test_the_usage_command_prints_the_rollup(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with app_client(db) as client:
        alice = key(client, "alice")
        for _ in range(3):
            client.post("/v1/chat/completions", json=ASK, headers=bearer(alice))
    config = tmp_path / "c.yaml"
    config.write_text(f"storage:\n  path: {db}\n")
    assert cli.main(["usage", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1].split() == [
        "day", "key", "model", "requests", "errors", "prompt", "completion", "cost", "USD",
    ]  # fmt: skip
    assert lines[2].split()[1:4] == ["alice", "fake-model", "3"]
    assert lines[-1].split()[:2] == ["total", "3"]
    assert cli.main(["usage", "--config", str(config), "--key", "nobody"]) == 2
    assert cli.main(["usage", "--config", str(config), "--start-date", "May 1"]) == 2


def test_a_budget_period_ends_and_the_spend_starts_again(client: TestClient) -> None:
    created = client.post(
        "/key/generate", json={"max_budget": 5, "budget_duration": "1d"}, headers=ADMIN
    ).json()
    limited = bearer(created["key"])
    answer = client.post("/v1/chat/completions", json={**ASK, "max_tokens": 10}, headers=limited)
    assert answer.status_code == 200
    client.get("/usage", headers=ADMIN)  # after the request's end: its row is written
    accounting = client.app.state.interference.accounting  # type: ignore[attr-defined]
    client.portal.call(accounting.sync)  # type: ignore[union-attr]  # in the app's loop
    keys = client.app.state.interference.keys  # type: ignore[attr-defined]
    record = keys.resolve(created["token"])
    assert record.spend > 0
    first_reset = record.budget_reset_at
    record.budget_reset_at = time.time() - 2.5 * 86400  # as if two and a half days went by
    stale = record.budget_reset_at

    def rewind(connection: sqlite3.Connection) -> None:
        connection.execute("UPDATE keys SET budget_reset_at = ?", (stale,))

    accounting.database.call(rewind)
    client.portal.call(accounting.sync)  # type: ignore[union-attr]
    record = keys.resolve(created["token"])
    assert record.spend == 0
    assert record.budget_reset_at == pytest.approx(stale + 3 * 86400)  # the next one to come
    assert record.budget_reset_at > time.time()
    assert first_reset is not None


def test_a_broken_database_keeps_the_known_keys_serving_and_health_says_so(db: Path) -> None:
    with app_client(db, refresh_s=0.02) as client:
        broken_database_case(client)


def test_budgets_when_down_open_serves_keys_with_a_budget(db: Path) -> None:
    config = Config.model_validate(
        {
            "server": {"master_key": MASTER},
            "storage": {"path": str(db), "refresh_s": 0.02, "budgets_when_down": "open"},
            "prices": {"fake-model": {"input": 1000, "output": 2000}},
        }
    )
    app = create_app(config, providers=[FakeProvider()])
    with TestClient(app, raise_server_exceptions=False) as client:
        broken_database_case(client, "open")


def client_db(client: TestClient) -> Path:
    """The app's SQLite file."""
    return Path(client.app.state.interference.accounting.where)  # type: ignore[attr-defined]


def broken_database_case(client: TestClient, budgets_when_down: str = "closed") -> None:
    alice = key(client, "alice")
    funded = client.post("/key/generate", json={"max_budget": 10.0}, headers=ADMIN).json()["key"]
    accounting = client.app.state.interference.accounting  # type: ignore[attr-defined]
    broken = SQLiteDatabase(Path("/nonexistent/never/here.db"))  # every statement fails
    working, accounting.database = accounting.database, broken
    accounting.ledger.database = broken
    accounting.keys.database = broken
    writer = accounting.ledger.writer  # and the usage writer's file cannot be made
    where, writer._where = writer._where, {"path": str(client_db(client) / "under-a-file.db")}
    client.portal.call(writer.close)  # type: ignore[union-attr]  # the next batch starts one
    try:
        answer = client.post("/v1/chat/completions", json=ASK, headers=bearer(alice))
        assert answer.status_code == 200  # the key is known in memory
        for _ in range(100):  # bounded: 2 s
            if accounting.error is not None:
                break
            time.sleep(0.02)
        health = client.get("/health", headers=ADMIN).json()["storage"]
        assert health["ok"] is False
        assert "could not write" in health["error"]
        assert health["usage_rows_waiting"] >= 1  # kept for when it works again
        small = {**ASK, "max_tokens": 10}
        budgeted = client.post("/v1/chat/completions", json=small, headers=bearer(funded))
        if budgets_when_down == "closed":  # its spend cannot be written: refused
            assert budgeted.status_code == 503
            assert budgeted.json()["error"]["code"] == "budget_unavailable"
        else:  # held to the budget on this process's counts
            assert budgeted.status_code == 200
    finally:
        accounting.database = accounting.ledger.database = accounting.keys.database = working
        writer._where = where
        client.portal.call(writer.close)  # type: ignore[union-attr]
    for _ in range(100):
        if accounting.error is None:
            break
        time.sleep(0.02)
    assert client.get("/health", headers=ADMIN).json()["storage"]["ok"] is True
    assert client.get("/usage", headers=ADMIN).json()["total"]["requests"] >= 1


def test_usage_asked_between_refreshes_counts_each_cost_once_in_the_spend(db: Path) -> None:
    """``GET /usage`` writes the rows that just ended (before the next refresh): their cost
    must then leave the not-yet-written figure, or the key's spend counts it twice once the
    keys are read again."""
    with app_client(db, refresh_s=0.1) as client:
        created = key(client, "once")
        for _ in range(3):
            answer = client.post("/v1/chat/completions", json=ASK, headers=bearer(created))
            assert answer.status_code == 200
        usage = client.get("/usage", headers=ADMIN).json()
        cost = sum(r["cost"] for r in usage["data"] if r["key"] == "once")
        assert cost > 0
        time.sleep(0.4)  # refreshes: the keys' spend is read again
        info = client.get("/key/info", params={"key": created}, headers=ADMIN).json()
        assert info["info"]["spend"] == pytest.approx(cost)
