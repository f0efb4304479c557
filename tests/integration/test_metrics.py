"""``GET /metrics`` and ``GET /v1/status/recent`` after real requests through a real fake
upstream on 127.0.0.1: the scrape parses with prometheus_client's own parser, and its figures
agree with what was asked; with ``--workers 2`` one scrape counts both workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from interference.api.app import create_app
from interference.config import Config
from tests.support.openai_fake import openai_upstream
from tests.support.server import start_server
from tests.support.upstream import FakeUpstream

MASTER = "sk-master-metrics"
ADMIN = {"authorization": f"Bearer {MASTER}"}
ASK = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = openai_upstream("oai", words=5).start()
    yield fake
    fake.stop()


def settings(upstream: FakeUpstream, **extra: Any) -> dict[str, Any]:
    return {
        "providers": {
            "oai": {"kind": "openai", "base_url": f"{upstream.url}/v1"},
            "bad": {
                "kind": "openai",
                "base_url": "http://127.0.0.1:9/v1",
                "timeouts": {"connect": 1},
            },
        },
        "models": {
            "m": {"deployments": [{"provider": "oai", "model": "up"}]},
            "flaky": {"deployments": [{"provider": "bad", "model": "up"}], "fallbacks": ["m"]},
        },
        "openai_aliases": False,
        **extra,
    }


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by (name, sorted labels)."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_scrape_parses_and_agrees_with_the_requests(upstream: FakeUpstream) -> None:
    app = create_app(Config.model_validate(settings(upstream)))
    with TestClient(app, raise_server_exceptions=False) as client:
        for _ in range(3):
            assert client.post("/v1/chat/completions", json=ASK).status_code == 200
        for _ in range(2):
            streamed = client.post("/v1/chat/completions", json={**ASK, "stream": True})
            assert streamed.status_code == 200
        assert client.post("/v1/chat/completions", json={**ASK, "model": "x"}).status_code == 404
        fell_back = client.post("/v1/chat/completions", json={**ASK, "model": "flaky"})
        assert fell_back.status_code == 200  # its own deployment refused, then `m` answered
        answer = client.get("/metrics")
        recent = client.get("/v1/status/recent").json()
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = scrape(answer.text)

    assert value(samples, "interference_build_info", version="0.1.0") == 1
    chat = {"route": "chat"}
    assert value(samples, "interference_requests_total", **chat, model="m", status_code="200") == 5
    assert value(samples, "interference_requests_total", **chat, model="", status_code="404") == 1
    assert (
        value(samples, "interference_requests_total", **chat, model="flaky", status_code="200") == 1
    )
    # the fake answers 5 words and counts 3 prompt tokens, streamed or not
    assert (
        value(samples, "interference_tokens_total", model="m", provider="oai", type="output") == 25
    )
    assert (
        value(samples, "interference_tokens_total", model="m", provider="oai", type="input") == 15
    )
    assert (
        value(samples, "interference_time_to_first_token_seconds_count", model="m", provider="oai")
        == 2
    )
    durations = value(
        samples,
        "interference_request_duration_seconds_count",
        route="chat",
        model="m",
        provider="oai",
    )
    assert durations == 5
    inf = value(
        samples, "interference_request_duration_seconds_bucket", route="chat", model="m",
        provider="oai", le="+Inf",
    )  # fmt: skip
    assert inf == durations
    ok = {"provider": "oai", "deployment": "oai/up", "outcome": "ok", "error_class": ""}
    assert value(samples, "interference_upstream_requests_total", **ok) == 6
    failed = value(
        samples, "interference_upstream_requests_total", provider="bad", deployment="bad/up",
        outcome="error", error_class="upstream_error",
    )  # fmt: skip
    assert failed >= 1
    assert (
        value(
            samples, "interference_fallbacks_total", from_model="flaky", to_model="m", result="ok"
        )
        == 1
    )
    assert value(samples, "interference_deployment_state", provider="oai", deployment="oai/up") == 0
    assert (
        value(
            samples,
            "interference_upstream_duration_seconds_count",
            provider="oai",
            deployment="oai/up",
        )
        == 6
    )

    models = [p["models"] for p in recent["points"] if p["models"]]
    assert sum(m["m"]["requests_per_s"] * recent["bucket_s"] for m in models if "m" in m) == 5
    assert any(m.get("m", {}).get("ttft_p50_ms") is not None for m in models)
    assert sum(p["deployments"].get("bad/up", 0) for p in recent["points"]) >= 1


def test_metrics_are_for_the_master_key_and_per_key_labels_are_opt_in(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    for key_labels in (False, True):
        config = Config.model_validate(
            settings(
                upstream,
                server={"master_key": MASTER},
                storage={"path": str(tmp_path / f"k{key_labels}.db")},
                metrics={"key_labels": key_labels},
            )
        )
        with TestClient(create_app(config), raise_server_exceptions=False) as client:
            made = client.post("/key/generate", json={"key_alias": "team-a"}, headers=ADMIN)
            virtual = {"authorization": f"Bearer {made.json()['key']}"}
            assert client.post("/v1/chat/completions", json=ASK, headers=virtual).status_code == 200
            assert client.get("/metrics").status_code == 401
            refused = client.get("/metrics", headers=virtual)
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "admin_only"
            assert client.get("/v1/status/recent", headers=virtual).status_code == 403
            samples = scrape(client.get("/metrics", headers=ADMIN).text)
        labels = {"route": "chat", "model": "m", "status_code": "200"}
        if key_labels:
            assert value(samples, "interference_requests_total", **labels, key="team-a") == 1
        else:
            assert value(samples, "interference_requests_total", **labels) == 1
            assert not any("team-a" in str(k) for k in samples)  # no key anywhere


def test_metrics_off_count_nothing_per_request(upstream: FakeUpstream) -> None:
    config = Config.model_validate(settings(upstream, metrics={"enabled": False}))
    with TestClient(create_app(config), raise_server_exceptions=False) as client:
        assert client.post("/v1/chat/completions", json=ASK).status_code == 200
        samples = scrape(client.get("/metrics").text)
    assert (
        value(samples, "interference_requests_total", route="chat", model="m", status_code="200")
        == 0
    )
    # what is read at the scrape is still there
    assert value(samples, "interference_upstream_requests_total", provider="oai",
                 deployment="oai/up", outcome="ok", error_class="") == 1  # fmt: skip


def test_one_scrape_counts_every_worker(
    upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the supervisor makes the figures' folder
    config = (
        f'providers:\n  oai: {{kind: openai, base_url: "{upstream.url}/v1"}}\n'
        "models:\n  m:\n    deployments: [{provider: oai, model: up}]\n"
        "openai_aliases: false\n"
    )
    server = start_server(tmp_path, config, "--workers", "2")
    try:
        for _ in range(30):  # a new connection each: the kernel spreads them over the workers
            answer = httpx.post(f"{server.url}/v1/chat/completions", json=ASK, timeout=10)
            assert answer.status_code == 200
        time.sleep(2.5)  # each worker writes its figures every second
        counts = []
        for _ in range(6):  # answered by either worker
            samples = scrape(httpx.get(f"{server.url}/metrics", timeout=10).text)
            counts.append(
                value(
                    samples,
                    "interference_requests_total",
                    route="chat",
                    model="m",
                    status_code="200",
                )
            )
        own = []  # what each worker counted itself: both answered some
        for path in tmp_path.glob("interference-metrics-*/*.json"):
            data = orjson.loads(path.read_bytes())["metrics"]["counters"]["requests"]
            own.append(sum(v for k, v in data if k == ["chat", "m", "200"]))
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]
    assert counts == [30] * 6
    assert len(own) == 2
    assert all(n > 0 for n in own)
    assert sum(own) == 30
