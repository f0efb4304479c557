"""Virtual keys and usage with ``interference serve --workers 2`` on one SQLite file: a key
created through one worker is accepted by every worker within ``storage.refresh_s``, and the
usage rows of both workers land in the same ledger, the last ones at shutdown."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.openai_fake import openai_upstream
from tests.support.server import start_server
from tests.support.upstream import FakeUpstream

MASTER = "sk-master-workers"
CONFIG = """
server: {{master_key: {master}}}
storage: {{path: "{db}", refresh_s: 0.2}}
providers:
  oai: {{kind: openai, base_url: "{url}/v1"}}
models:
  m:
    deployments: [{{provider: oai, model: upstream-model}}]
prices:
  upstream-model: {{input: 1000, output: 2000}}
openai_aliases: false
"""
ASK = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = openai_upstream("oai").start()
    yield fake
    fake.stop()


def test_two_workers_share_keys_and_the_ledger(upstream: FakeUpstream, tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    config = CONFIG.format(master=MASTER, db=db, url=upstream.url)
    server = start_server(tmp_path, config, "--workers", "2")
    try:
        admin = {"authorization": f"Bearer {MASTER}"}
        created = httpx.post(f"{server.url}/key/generate", json={}, headers=admin, timeout=10)
        key = created.json()["key"]
        time.sleep(0.6)  # three refreshes: every worker has read the new key
        statuses = [  # a new connection each: the kernel spreads them over the workers
            httpx.post(
                f"{server.url}/v1/chat/completions",
                json=ASK,
                headers={"authorization": f"Bearer {key}"},
                timeout=10,
            ).status_code
            for _ in range(30)
        ]
        assert statuses == [200] * 30
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]
    rows = sqlite3.connect(db).execute("SELECT COUNT(*), SUM(cost) FROM usage").fetchone()
    assert rows[0] == 30  # both workers' rows, the last ones written at shutdown
    spend = sqlite3.connect(db).execute("SELECT spend FROM keys").fetchone()[0]
    assert spend == pytest.approx(rows[1])
    assert spend > 0


def test_workers_share_a_key_s_rpm_through_redis(
    upstream: FakeUpstream, tmp_path: Path, redis_url: str
) -> None:
    """``--workers N`` counts limits the way replicas do: in ``storage.redis_url``, for all."""
    config = CONFIG.format(master=MASTER, db=tmp_path / "w.db", url=upstream.url).replace(
        "refresh_s: 0.2}", f'refresh_s: 0.2, redis_url: "{redis_url}"}}'
    )
    assert redis_url in config
    server = start_server(tmp_path, config, "--workers", "2")
    try:
        admin = {"authorization": f"Bearer {MASTER}"}
        created = httpx.post(
            f"{server.url}/key/generate", json={"rpm_limit": 10}, headers=admin, timeout=10
        )
        key = created.json()["key"]
        time.sleep(0.6)
        statuses = [
            httpx.post(
                f"{server.url}/v1/chat/completions",
                json=ASK,
                headers={"authorization": f"Bearer {key}"},
                timeout=10,
            ).status_code
            for _ in range(30)
        ]
        health = httpx.get(f"{server.url}/health", headers=admin, timeout=10).json()
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]
    assert statuses.count(200) == 10  # not 10 per worker
    assert statuses.count(429) == 20
    assert health["storage"]["counters"] == "redis"
