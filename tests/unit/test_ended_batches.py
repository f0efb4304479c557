"""Ended requests are counted in batches (api/guard.py, ``RequestGuard.count_ended``): the
metrics and the usage rows wait for a batch of 256 or for 50 ms, every read of the figures
counts the batch first, and a key's budget is charged as its request ends, not with its batch."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from interference.api import guard as guard_module
from interference.api.app import create_app
from interference.config import Config
from tests.support.fakes import FakeProvider
from tests.unit.test_virtual_keys import ADMIN, MASTER, bearer

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "Hi"}]}
SMALL = {**CHAT, "max_tokens": 10}  # a reservation far inside the budget


@pytest.fixture
def slow_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches that wait a minute: only a read of the figures (or a full batch) counts them."""
    monkeypatch.setattr(guard_module, "COUNT_EVERY_S", 60.0)


def client_for(settings: dict[str, Any]) -> TestClient:
    app = create_app(Config.model_validate(settings), providers=[FakeProvider()])
    return TestClient(app, raise_server_exceptions=False)


def counted_chats(client: TestClient) -> float:
    """Chat requests as the metrics hold them now, without counting the waiting batch."""
    telemetry = client.app.state.interference.telemetry  # type: ignore[attr-defined]
    requests = telemetry.metrics.snapshot().counters["requests"]
    return sum(value for labels, value in requests.items() if labels[0] == "chat")


def scraped_chats(client: TestClient) -> float:
    text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = families["interference_requests"].samples
    return sum(s.value for s in samples if s.labels.get("route") == "chat")


def waiting_chats(guard: Any) -> list[Any]:
    """The chat requests that ended and wait in the guard's batch."""
    return [r for r, _ in guard._ended if r.path == "/v1/chat/completions"]


@pytest.fixture
def metered(slow_batches: None) -> Iterator[TestClient]:
    with client_for({}) as client:
        yield client


def test_a_scrape_counts_the_requests_still_waiting_in_the_batch(metered: TestClient) -> None:
    for _ in range(3):
        assert metered.post("/v1/chat/completions", json=CHAT).status_code == 200
    guard = metered.app.state.interference.guard  # type: ignore[attr-defined]
    assert len(waiting_chats(guard)) == 3
    assert counted_chats(metered) == 0  # not yet: the batch waits
    assert scraped_chats(metered) == 3  # the scrape counted it first
    assert not waiting_chats(guard)  # (the scrape's own request waits in the next batch)


def test_a_full_batch_is_counted_at_once(
    metered: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guard_module, "COUNT_EVERY_REQUESTS", 2)
    for _ in range(2):
        assert metered.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert counted_chats(metered) == 2
    assert metered.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert counted_chats(metered) == 2  # the third waits for the next batch


def test_a_batch_is_counted_within_its_time() -> None:
    with client_for({}) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        deadline = time.monotonic() + 5
        while counted_chats(client) < 1:  # the 50 ms timer, in the app's own event loop
            assert time.monotonic() < deadline, "the batch was never counted"
            time.sleep(0.01)


def test_a_budget_is_charged_as_its_request_ends_and_its_row_keeps_the_end_time(
    slow_batches: None, tmp_path: Path
) -> None:
    settings = {
        "server": {"master_key": MASTER},
        "storage": {"path": str(tmp_path / "usage.db"), "refresh_s": 60},
        "prices": {"fake-model": {"input": 1000, "output": 2000}},  # USD per 1M tokens
    }
    with client_for(settings) as client:
        made = client.post("/key/generate", json={"max_budget": 5.0}, headers=ADMIN).json()
        state = client.app.state.interference  # type: ignore[attr-defined]
        record = state.keys.resolve(made["key"])
        began = time.time()
        asked = client.post("/v1/chat/completions", json=SMALL, headers=bearer(made["key"]))
        assert asked.status_code == 200, asked.text
        ended = time.time()
        accounting = state.accounting
        assert len(waiting_chats(state.guard)) == 1  # its usage row waits for the batch ...
        assert accounting.ledger.pending == 0
        charged = accounting.spend(record)
        assert charged > 0  # ... its cost does not: the next request of the key sees it
        assert accounting.counters.held(record.digest) == 0  # and its reservation is gone
        time.sleep(0.3)
        info = client.get("/key/info", headers=bearer(made["key"])).json()["info"]
        assert info["spend"] == pytest.approx(charged)  # counted once
        assert accounting.ledger.pending == 1  # the read counted the batch
        row = accounting.ledger._pending[0]
        assert began <= row.at <= ended  # when the request ended, not when the batch ran
        usage = client.get("/usage", headers=ADMIN).json()
        assert usage["data"][0]["requests"] == 1
        assert usage["data"][0]["cost"] == pytest.approx(charged)
