"""Two gateway processes (``interference serve``) on one real PostgreSQL and one real Redis, as
replicas behind a load balancer: a key's ``rpm`` and budget hold for both together, under a
burst sent to both at once; a replica killed in the middle of a stream loses no ledger row of a
request that ended ``storage.refresh_s`` before; a replica stopped writes every row."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.openai_fake import openai_upstream
from tests.support.server import ServerProcess, start_server
from tests.support.upstream import FakeUpstream

MASTER = "sk-master-replicas"
CONFIG = """
server: {{master_key: {master}}}
storage: {{url: "{database}", redis_url: "{redis}", refresh_s: 0.2}}
providers:
  oai: {{kind: openai, base_url: "{url}/v1"}}
models:
  m:
    deployments: [{{provider: oai, model: upstream-model}}]
prices:
  upstream-model: {{input: 1000, output: 2000}}
openai_aliases: false
"""
ADMIN = {"authorization": f"Bearer {MASTER}"}
ASK = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10}


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = openai_upstream("oai").start()
    yield fake
    fake.stop()


@pytest.fixture
def replicas(
    upstream: FakeUpstream, postgres_url: str, redis_url: str, tmp_path: Path
) -> Iterator[list[ServerProcess]]:
    config = CONFIG.format(master=MASTER, database=postgres_url, redis=redis_url, url=upstream.url)
    started: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            folder = tmp_path / name
            folder.mkdir()
            started.append(start_server(folder, config))
        yield started
    finally:
        for server in started:
            if server.process.poll() is None:
                server.stop()


def new_key(server: ServerProcess, **fields: object) -> dict[str, str]:
    created = httpx.post(f"{server.url}/key/generate", json=fields, headers=ADMIN, timeout=10)
    assert created.status_code == 200, created.text
    return created.json()


def burst(replicas: list[ServerProcess], key: str, count: int) -> list[httpx.Response]:
    """``count`` requests at once, alternately to each replica."""
    headers = {"authorization": f"Bearer {key}"}

    def send(i: int) -> httpx.Response:
        url = replicas[i % len(replicas)].url
        return httpx.post(f"{url}/v1/chat/completions", json=ASK, headers=headers, timeout=30)

    with ThreadPoolExecutor(max_workers=25) as pool:
        return list(pool.map(send, range(count)))


def spend_of(server: ServerProcess, key: str) -> float:
    info = httpx.get(f"{server.url}/key/info", params={"key": key}, headers=ADMIN, timeout=10)
    spend: float = info.json()["info"]["spend"]
    return spend


def test_rpm_and_budget_hold_for_both_replicas_together(replicas: list[ServerProcess]) -> None:
    limited = new_key(replicas[0], key_alias="rpm10", rpm_limit=10)
    budget = 0.5  # each request may cost up to ~0.1 (its body at 1000/M, 10 tokens at 2000/M)
    funded = new_key(replicas[0], key_alias="funded", max_budget=budget)
    time.sleep(0.8)  # a few refreshes: the other replica knows the keys

    answers = burst(replicas, limited["key"], 100)
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 10  # not 10 per replica
    assert statuses.count(429) == 90
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refused.headers["retry-after"]) >= 1
    passed = next(a for a in answers if a.status_code == 200)
    assert passed.headers["x-ratelimit-limit-requests"] == "10"

    answers = burst(replicas, funded["key"], 100)
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) >= 4  # at least the worst cases that fit at once
    over = [a.json()["error"] for a in answers if a.status_code == 429]
    assert over
    assert {e["code"] for e in over} == {"budget_exceeded"}
    assert {e["type"] for e in over} == {"insufficient_quota"}
    time.sleep(0.8)  # every replica has written its rows
    spend = spend_of(replicas[1], funded["key"])
    assert 0 < spend <= budget  # the stated bound: never past the budget
    usage = httpx.get(f"{replicas[0].url}/usage", headers=ADMIN, timeout=10).json()
    requests = sum(r["requests"] for r in usage["data"] if r["key"] == "funded")
    assert requests == 100  # refused ones are rows too (status 429)


def test_a_killed_replica_loses_no_row_of_requests_that_ended_a_refresh_before(
    replicas: list[ServerProcess], upstream: FakeUpstream
) -> None:
    created = new_key(replicas[0], key_alias="crash")
    time.sleep(0.8)
    victim, survivor = replicas[1], replicas[0]
    headers = {"authorization": f"Bearer {created['key']}"}
    for _ in range(5):
        done = httpx.post(f"{victim.url}/v1/chat/completions", json=ASK, headers=headers)
        assert done.status_code == 200
    time.sleep(1.0)  # five refreshes of 0.2 s: the rows are written
    upstream.faults.chunk_delay = 0.5
    with httpx.stream(
        "POST",
        f"{victim.url}/v1/chat/completions",
        json={**ASK, "stream": True},
        headers=headers,
        timeout=30,
    ) as streamed:
        lines = streamed.iter_lines()  # kept: a dropped iterator closes the stream, and the
        next(lines)  # victim could then write its row before the kill; the stream is open
        os.kill(victim.process.pid, signal.SIGKILL)  # a crash: nothing is flushed
        victim.process.wait(timeout=10)
    upstream.faults.chunk_delay = 0.0

    usage = httpx.get(f"{survivor.url}/usage", headers=ADMIN, timeout=10).json()
    rows = [r for r in usage["data"] if r["key"] == "crash"]
    assert sum(r["requests"] for r in rows) == 5

    # a replica stopped as a service manager would (SIGTERM) writes its last rows on the way out
    for _ in range(3):
        done = httpx.post(f"{survivor.url}/v1/chat/completions", json=ASK, headers=headers)
        assert done.status_code == 200
    assert survivor.stop() == 0
    psycopg = pytest.importorskip("psycopg")  # no replica is left: read PostgreSQL directly
    with psycopg.connect(database_url(survivor)) as connection:
        count = connection.execute(
            "SELECT SUM(requests) FROM usage_daily WHERE key_digest = %s", (created["token"],)
        ).fetchone()
    assert count is not None
    assert count[0] == 8


def database_url(server: ServerProcess) -> str:
    """The database URL in the replica's configuration file."""
    text = (server.log.parent / "interference.yaml").read_text()
    return text.split('url: "', 1)[1].split('"', 1)[0]
