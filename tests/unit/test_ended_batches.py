"""Ended requests are counted in batches (api/guard.py, ``RequestGuard.count_ended``): the
metrics and the usage rows wait for a batch of 256 or for 50 ms, every read of the figures
counts the batch first, and a key's budget reservation is held until its batch is counted (a
request its budget would refuse counts the batch first)."""

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
from interference.store.usage import UsageRow
from tests.support.fakes import FakeProvider
from tests.unit.test_virtual_keys import ADMIN, MASTER, bearer

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "Hi"}]}


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


def test_a_reservation_waits_for_its_batch_and_a_refusal_counts_the_batch_first(
    slow_batches: None, tmp_path: Path
) -> None:
    settings = {
        "server": {"master_key": MASTER},
        "storage": {"path": str(tmp_path / "usage.db"), "refresh_s": 60},
        "prices": {"fake-model": {"input": 1000, "output": 2000}},  # USD per 1M tokens
    }
    bounded = {**CHAT, "max_tokens": 1000}  # a reservation far above the cost
    with client_for(settings) as client:
        made = client.post("/key/generate", json={"max_budget": 100.0}, headers=ADMIN).json()
        state = client.app.state.interference  # type: ignore[attr-defined]
        record = state.keys.resolve(made["key"])
        accounting = state.accounting
        began = time.time()
        asked = client.post("/v1/chat/completions", json=bounded, headers=bearer(made["key"]))
        assert asked.status_code == 200, asked.text
        ended = time.time()
        held = accounting.counters.held(record.digest)
        assert held >= 1000 * 2000 / 1e6  # its max_tokens at the output price, and the prompt
        assert accounting.spend(record) == 0  # the request ended; its batch waits
        assert len(waiting_chats(state.guard)) == 1

        # room for one reservation and the first request's cost, not for two reservations
        update = {"key": made["key"], "max_budget": held * 1.5}
        assert client.post("/key/update", json=update, headers=ADMIN).status_code == 200
        again = client.post("/v1/chat/completions", json=bounded, headers=bearer(made["key"]))
        assert again.status_code == 200, again.text  # the budget counted the batch, then held
        first_cost = accounting.spend(record)
        assert 0 < first_cost < held * 0.5
        assert len(waiting_chats(state.guard)) == 1  # the second request's
        assert accounting.ledger.pending == 1  # the first one's row

        info = client.get("/key/info", headers=bearer(made["key"])).json()["info"]
        assert info["spend"] == pytest.approx(2 * first_cost)  # the read counted the batch
        assert accounting.counters.held(record.digest) == pytest.approx(0, abs=1e-9)
        row = UsageRow(*accounting.ledger._pending[0])
        assert began <= row.at <= ended  # when the request ended, not when the batch ran
        usage = client.get("/usage", headers=ADMIN).json()
        assert usage["data"][0]["requests"] == 2
        assert usage["data"][0]["cost"] == pytest.approx(2 * first_cost)
