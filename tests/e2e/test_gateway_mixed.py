"""One endpoint before the embedded model and OpenAI-compatible, Anthropic, Gemini upstreams.

The real server runs in a subprocess; the upstreams are the suite's HTTP fakes on 127.0.0.1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.anthropic_fake import FakeAnthropic
from tests.support.gemini_fake import FakeGemini
from tests.support.openai_fake import openai_upstream
from tests.support.server import ServerProcess, start_server, stream_then_disconnect
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

HI = [{"role": "user", "content": "Say hi."}]

CONFIG = """
providers:
  local: {{kind: local, parallel: 2, context: 1024}}
  oai:
    kind: openai
    base_url: {oai}/v1
    api_key: test-openai-key
    timeouts: {{connect: 1, first_token: 2, idle: 2, total: 10}}
  claude:
    kind: anthropic
    base_url: {claude}
    api_key: test-anthropic-key
    timeouts: {{connect: 1, first_token: 2, idle: 2, total: 10}}
  gem:
    kind: gemini
    base_url: {gemini}
    api_key: test-gemini-key
    timeouts: {{connect: 1, first_token: 2, idle: 2, total: 10}}
models:
  gpt-4o:
    deployments: [{{provider: oai, model: upstream-model}}]
    fallbacks: [smollm2-135m-instruct]
  claude:
    deployments: [{{provider: claude, model: claude-test}}]
  either:
    deployments:
      - {{provider: claude, model: claude-test}}
      - {{provider: oai, model: upstream-model}}
  gemini-flash:
    deployments: [{{provider: gem, model: gemini-test}}]
    fallbacks: [claude]
routing:
  strategy: ordered
  cooldown: {{failures: 100, seconds: 1}}
"""


@pytest.fixture(scope="module")
def oai() -> Iterator[FakeUpstream]:
    upstream = openai_upstream("oai").start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def claude() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic()
    with fake.upstream:
        yield fake


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    fake = FakeGemini()
    with FakeUpstream(fake.app()) as upstream:
        fake.upstream = upstream
        yield fake


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    oai: FakeUpstream,
    claude: FakeAnthropic,
    gemini: FakeGemini,
) -> Iterator[ServerProcess]:
    assert gemini.upstream is not None
    config = CONFIG.format(oai=oai.url, claude=claude.upstream.url, gemini=gemini.upstream.url)
    running = start_server(tmp_path_factory.mktemp("mixed"), config)
    yield running
    assert running.stop() == 0


@pytest.fixture(autouse=True)
def _reset(oai: FakeUpstream, claude: FakeAnthropic, gemini: FakeGemini) -> None:
    oai.reset()
    claude.reset()
    gemini.reset()
    assert gemini.upstream is not None
    gemini.upstream.reset()


def post(gateway: ServerProcess, **body: object) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions", json={"messages": HI, **body}, timeout=60
    )


def test_three_providers_through_one_endpoint(gateway: ServerProcess) -> None:
    client = gateway.client()
    local = client.chat.completions.with_raw_response.create(
        model="smollm2-135m-instruct",
        messages=HI,
        max_tokens=8,  # type: ignore[arg-type]
    )
    assert local.headers["x-interference-deployment"] == "local/smollm2-135m-instruct"
    assert local.parse().choices[0].message.content
    openai_text = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(model="gpt-4o", messages=HI, stream=True)  # type: ignore[arg-type]
        if chunk.choices
    )
    assert openai_text == "Hello from oai w0 w1 w2 w3"
    claude_reply = client.chat.completions.with_raw_response.create(model="claude", messages=HI)  # type: ignore[arg-type]
    assert claude_reply.headers["x-interference-deployment"] == "claude/claude-test"
    completion = claude_reply.parse()
    assert completion.model == "claude"
    assert completion.choices[0].message.content
    claude_stream = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(model="claude", messages=HI, stream=True)  # type: ignore[arg-type]
        if chunk.choices
    )
    assert claude_stream == completion.choices[0].message.content
    gemini_stream = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model="gemini-flash",
            messages=HI,
            stream=True,  # type: ignore[arg-type]
        )
        if chunk.choices
    )
    assert gemini_stream == "Hello world"
    ids = [m.id for m in client.models.list()]
    expected = {"smollm2-135m-instruct", "gpt-4o", "claude", "either", "gemini-flash"}
    assert expected | {"gpt-3.5-turbo"} <= set(ids)


def test_gemini_failure_falls_back_to_anthropic(gateway: ServerProcess, gemini: FakeGemini) -> None:
    assert gemini.upstream is not None
    gemini.upstream.faults.status = 503
    response = post(gateway, model="gemini-flash")
    assert response.status_code == 200
    assert response.headers["x-interference-deployment"] == "claude/claude-test"


@pytest.mark.parametrize("status", [500, 429, 401])
def test_a_failing_cloud_model_falls_back_to_the_embedded_one(
    gateway: ServerProcess, oai: FakeUpstream, status: int
) -> None:
    oai.faults.status = status
    response = post(gateway, model="gpt-4o", max_tokens=8)
    assert response.status_code == 200
    assert response.headers["x-interference-deployment"] == "local/smollm2-135m-instruct"
    assert response.headers["x-interference-attempts"] == "2"
    assert response.json()["model"] == "gpt-4o"


def test_a_hung_upstream_falls_back_after_its_first_token_bound(
    gateway: ServerProcess, oai: FakeUpstream
) -> None:
    oai.faults.hang_before_first_byte = 10
    started = time.perf_counter()
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": HI, "max_tokens": 8, "stream": True},
        timeout=60,
    ) as response:
        assert response.headers["x-interference-deployment"] == "local/smollm2-135m-instruct"
        body = response.read().decode()
    assert body.endswith("data: [DONE]\n\n")
    assert 2.0 <= time.perf_counter() - started < 5.0


@pytest.mark.parametrize("status", [529, 500])
def test_anthropic_failure_falls_back_to_the_openai_deployment(
    gateway: ServerProcess, claude: FakeAnthropic, status: int
) -> None:
    claude.upstream.faults.status = status
    response = post(gateway, model="either", stream=False)
    assert response.headers["x-interference-deployment"] == "oai/upstream-model"
    assert response.json()["choices"][0]["message"]["content"] == "Hello from oai w0 w1 w2 w3"


def test_client_errors_from_an_upstream_are_not_failed_over(
    gateway: ServerProcess, claude: FakeAnthropic, oai: FakeUpstream
) -> None:
    claude.upstream.faults.status = 400
    response = post(gateway, model="either")
    assert response.status_code == 400
    assert oai.observed.requests == []


def test_client_disconnect_closes_the_upstream_request(
    gateway: ServerProcess, oai: FakeUpstream
) -> None:
    oai.faults.chunk_delay = 0.3
    body = {"model": "gpt-4o", "messages": HI}
    stream_then_disconnect(gateway.url, body, until=b"Hello from oai")
    deadline = time.monotonic() + 3
    while not oai.observed.disconnects and time.monotonic() < deadline:
        time.sleep(0.02)
    assert oai.observed.disconnects == 1
    assert oai.observed.completed_streams == 0


def test_operator_view(gateway: ServerProcess) -> None:
    status = httpx.get(f"{gateway.url}/v1/providers").json()
    assert [p["name"] for p in status["providers"]] == ["local", "oai", "claude", "gem"]
    assert "test-openai-key" not in json.dumps(status)
    log = Path(gateway.log).read_text()
    assert "test-openai-key" not in log
    assert "test-anthropic-key" not in log
    assert "test-gemini-key" not in log
