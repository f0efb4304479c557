"""A full upstream connection pool, over real sockets: a bounded wait for a connection, then the
next deployment or a 503 ``upstream_busy`` with ``Retry-After``, never a silent queue; the wait
on the request's log line, the pool in ``/v1/providers`` and ``/metrics`` (issue 18)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from interference.upstream.client import POOL_WAIT, PoolFullError, PoolWait
from interference.upstream.fast import FastClient
from tests.support.openai_fake import openai_upstream
from tests.support.server import start_server
from tests.support.upstream import FakeUpstream

STREAM = b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'


@pytest.fixture
def slow() -> Iterator[FakeUpstream]:
    """Streams of 10 pieces, 0.4 s apart: each holds its connection for 4 s."""
    with openai_upstream("slow", words=10) as upstream:
        upstream.faults.chunk_delay = 0.4
        yield upstream


@pytest.fixture
def quick() -> Iterator[FakeUpstream]:
    with openai_upstream("quick") as upstream:
        yield upstream


@contextlib.asynccontextmanager
async def held(client: FastClient) -> AsyncIterator[None]:
    """A stream whose head has come, holding one of the pool's connections."""
    async with client.stream("POST", "/v1/chat/completions", content=STREAM) as response:
        assert response.status_code == 200
        yield


def test_a_request_waits_at_most_pool_timeout_then_fails_and_the_pool_says_so(
    slow: FakeUpstream,
) -> None:
    async def scenario() -> None:
        client = FastClient(slow.url, {}, max_connections=2, connect_timeout=2, pool_timeout=0.3)
        try:
            async with held(client), held(client):
                stats = client.pool()
                assert (stats.in_use, stats.open, stats.waiting) == (2, 2, 0)
                wait = PoolWait()
                POOL_WAIT.set(wait)
                began = time.perf_counter()
                with pytest.raises(PoolFullError, match="all 2 connections"):
                    async with held(client):
                        pass
                waited = time.perf_counter() - began
                assert 0.3 <= waited < 0.8
                assert wait.seconds == pytest.approx(waited, abs=0.05)
                assert (stats.refused, stats.waited, stats.waiting) == (1, 1, 0)
                assert stats.in_use == 2

                # a connection that comes free within the bound is taken: no refusal
                async def third() -> float:
                    mine = PoolWait()
                    POOL_WAIT.set(mine)
                    async with held(client):
                        return mine.seconds

                waiting = asyncio.create_task(third())
                await asyncio.sleep(0.1)
                assert client.pool().waiting == 1
                raise _ReleaseError  # leaves both held streams: their connections are closed
        except _ReleaseError:
            pass
        try:
            assert 0.05 < await asyncio.wait_for(waiting, 5) < 0.3
            assert client.pool().refused == 1
            assert client.pool().in_use == 0
        finally:
            await client.aclose()

    asyncio.run(asyncio.wait_for(scenario(), 20))


class _ReleaseError(Exception):
    pass


def test_a_full_pool_moves_to_the_next_deployment_else_answers_503_upstream_busy(
    tmp_path: Path, slow: FakeUpstream, quick: FakeUpstream
) -> None:
    config = f"""
providers:
  narrow: {{kind: openai, base_url: "{slow.url}/v1", max_connections: 1, pool_timeout: 0.3}}
  wide: {{kind: openai, base_url: "{quick.url}/v1"}}
models:
  solo:
    deployments: [{{provider: narrow, model: m}}]
  pair:
    deployments: [{{provider: narrow, model: m}}, {{provider: wide, model: m}}]
routing: {{strategy: ordered}}
openai_aliases: false
"""
    server = start_server(tmp_path, config)
    try:
        chat = {"messages": [{"role": "user", "content": "hi"}]}
        with (
            httpx.Client(base_url=server.url, timeout=20) as http,
            http.stream(
                "POST", "/v1/chat/completions", json={**chat, "model": "solo", "stream": True}
            ) as first,
        ):
            assert first.status_code == 200
            events = first.iter_bytes()  # referenced: a dropped iterator closes the stream
            next(events)  # the stream holds narrow's one connection

            began = time.perf_counter()
            busy = http.post("/v1/chat/completions", json={**chat, "model": "solo"})
            assert time.perf_counter() - began >= 0.3, busy.text
            assert busy.status_code == 503
            assert busy.headers["retry-after"] == "1"
            error = busy.json()["error"]
            assert error["code"] == "upstream_busy"
            assert "max_connections" in error["message"]

            moved = http.post("/v1/chat/completions", json={**chat, "model": "pair"})
            assert moved.status_code == 200
            assert moved.json()["choices"][0]["message"]["content"].startswith("Hello from quick")

            providers = {p["name"]: p for p in http.get("/v1/providers").json()["providers"]}
            pool = providers["narrow"]["connections"]
            assert pool["max_connections"] == 1
            assert pool["in_use"] == 1
            assert pool["refused"] == 2
            assert pool["waited"] == 2
            assert pool["wait_seconds"] >= 0.6

            families = {
                f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)
            }
            refused = {
                s.labels["provider"]: s.value
                for s in families["interference_upstream_pool_refused"].samples
            }
            assert refused == {"narrow": 2.0, "wide": 0.0}
            in_use = {
                (s.labels["provider"], s.labels["state"]): s.value
                for s in families["interference_upstream_connections"].samples
            }
            assert in_use[("narrow", "in_use")] == 1.0
    finally:
        server.stop()
    log = server.log.read_text()
    warnings = [line for line in log.splitlines() if "refused by providers.narrow" in line]
    assert len(warnings) == 1, log  # two refusals in a minute: one line
    assert "providers.narrow.max_connections" in warnings[0]
    busy_lines = [line for line in log.splitlines() if " 503" in line and "pool_wait_ms=" in line]
    assert busy_lines, log
