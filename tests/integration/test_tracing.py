"""OpenTelemetry traces (``telemetry.otlp_endpoint``) sent to a real OTLP/HTTP receiver on
127.0.0.1 (:mod:`tests.support.otlp_receiver`, decoding the protobuf with opentelemetry-proto),
after real requests through real fake upstreams: a SERVER span per request in the client's trace
(``traceparent``) with the request id, a GenAI span per upstream attempt as its child, the
upstream request carrying the attempt span's ``traceparent``, failed attempts with ``error.type``
and status ERROR, no prompt or answer text; and with tracing off, OpenTelemetry not even
imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from interference.api.app import create_app
from interference.config import Config, ConfigError, TelemetryConfig
from interference.telemetry.tracing import make_tracer, traces_url
from tests.support.openai_fake import openai_upstream
from tests.support.otlp_receiver import OTLPReceiver, ReceivedSpan
from tests.support.upstream import FakeUpstream

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "Tell me about the purple elephant"
ASK = {"model": "m", "messages": [{"role": "user", "content": PROMPT}]}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def traceparent(trace_id: str = TRACE_ID, parent: str = CLIENT_SPAN) -> str:
    return f"00-{trace_id}-{parent}-01"


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    otlp = OTLPReceiver().start()
    yield otlp
    otlp.stop()


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = openai_upstream("oai", words=5).start()
    yield fake
    fake.stop()


@pytest.fixture
def broken() -> Iterator[FakeUpstream]:
    fake = openai_upstream("broken").start()
    fake.faults.status = 500
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def no_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


def settings(upstream: FakeUpstream, broken: FakeUpstream, **extra: Any) -> dict[str, Any]:
    return {
        "providers": {
            "oai": {"kind": "openai", "base_url": f"{upstream.url}/v1"},
            "bad": {"kind": "openai", "base_url": f"{broken.url}/v1"},
        },
        "models": {
            "m": {"deployments": [{"provider": "oai", "model": "up"}]},
            "flaky": {"deployments": [{"provider": "bad", "model": "down"}], "fallbacks": ["m"]},
        },
        "routing": {"retry": {"attempts_per_deployment": 1}},
        "openai_aliases": False,
        **extra,
    }


def ids(header: str) -> tuple[str, str]:
    """The trace id and parent span id of a ``traceparent`` header (version 00)."""
    version, trace_id, parent, _flags = header.split("-")
    assert version == "00"
    return trace_id, parent


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    found = [s for s in spans if s.parent_span_id == parent.span_id]
    return sorted(found, key=lambda s: s.start_ns)


def request_span(spans: list[ReceivedSpan], request_id: str) -> ReceivedSpan:
    (span,) = [s for s in spans if s.attributes.get("interference.request_id") == request_id]
    return span


def test_spans_reach_a_real_otlp_receiver(
    receiver: OTLPReceiver, upstream: FakeUpstream, broken: FakeUpstream
) -> None:
    config = Config.model_validate(
        settings(
            upstream,
            broken,
            telemetry={"otlp_endpoint": receiver.url, "service_name": "gw-under-test"},
        )
    )
    app = create_app(config)
    stream_trace = "0af7651916cd43dd8448eb211c80319c"
    with TestClient(app, raise_server_exceptions=False) as client:
        whole = client.post(
            "/v1/chat/completions",
            json=ASK,
            headers={"traceparent": traceparent(), "x-request-id": "req-whole"},
        )
        assert whole.status_code == 200
        streamed = client.post(
            "/v1/chat/completions",
            json={**ASK, "stream": True},
            headers={"traceparent": traceparent(stream_trace), "x-request-id": "req-stream"},
        )
        assert streamed.status_code == 200
        assert "[DONE]" in streamed.text
        fell_back = client.post(
            "/v1/chat/completions",
            json={**ASK, "model": "flaky"},
            headers={"x-request-id": "req-flaky"},
        )
        assert fell_back.status_code == 200
        assert client.get("/health").status_code == 200
    # the lifespan's end flushed every span
    spans = receiver.wait_for(7, timeout=5)
    assert {t.split(";")[0] for t in receiver.content_types} == {"application/x-protobuf"}
    assert len(spans) == 7, [s.name for s in spans]  # 3 requests, 4 attempts, nothing for /health
    assert all(s.resource["service.name"] == "gw-under-test" for s in spans)

    # the non-streamed request: in the client's trace, its request id, one attempt as its child
    server = request_span(spans, "req-whole")
    assert server.kind == "SERVER"
    assert server.name == "POST /v1/chat/completions"
    assert server.trace_id == TRACE_ID
    assert server.parent_span_id == CLIENT_SPAN
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.route"] == "/v1/chat/completions"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["interference.model"] == "m"
    assert server.status == "UNSET"
    (attempt,) = children(spans, server)
    assert attempt.kind == "CLIENT"
    assert attempt.name == "chat up"
    assert attempt.trace_id == TRACE_ID
    assert attempt.attributes["gen_ai.operation.name"] == "chat"
    assert attempt.attributes["gen_ai.provider.name"] == "openai"
    assert attempt.attributes["gen_ai.request.model"] == "up"
    assert attempt.attributes["gen_ai.response.model"] == "up"  # as the upstream answered
    assert attempt.attributes["gen_ai.usage.input_tokens"] == 3  # the fake's usage
    assert attempt.attributes["gen_ai.usage.output_tokens"] == 5
    assert attempt.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert attempt.attributes["gen_ai.request.stream"] is False
    assert attempt.attributes["interference.deployment"]
    assert "error.type" not in attempt.attributes
    assert server.start_ns <= attempt.start_ns <= attempt.end_ns <= server.end_ns

    # the upstream saw our attempt span's traceparent, in the client's trace
    sent = [ids(h.get("traceparent", "")) for h in upstream.observed.headers]
    assert len(sent) == 3  # whole, stream, and the fallback after the broken one
    assert sent[0] == (TRACE_ID, attempt.span_id)

    # the stream: its attempt span lasted until the stream's end, with the usage chunk's figures
    server = request_span(spans, "req-stream")
    assert server.trace_id == stream_trace
    assert server.attributes["interference.stream"] is True
    (attempt,) = children(spans, server)
    assert attempt.trace_id == stream_trace
    assert attempt.attributes["gen_ai.request.stream"] is True
    assert attempt.attributes["gen_ai.response.model"] == "up"
    assert attempt.attributes["gen_ai.usage.input_tokens"] == 3
    assert attempt.attributes["gen_ai.usage.output_tokens"] == 5
    assert attempt.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert sent[1] == (stream_trace, attempt.span_id)

    # the failing deployment: an attempt span with error.type and status ERROR, then the
    # fallback's successful one; no client traceparent, so a trace of our own
    server = request_span(spans, "req-flaky")
    assert server.parent_span_id == ""
    assert server.status == "UNSET"  # the request itself succeeded
    failed, succeeded = children(spans, server)
    assert failed.name == "chat down"
    assert failed.status == "ERROR"
    assert failed.attributes["error.type"] == "upstream_error"
    assert failed.attributes["interference.model"] == "flaky"
    assert "gen_ai.usage.input_tokens" not in failed.attributes
    assert succeeded.name == "chat up"
    assert succeeded.status == "UNSET"
    assert "error.type" not in succeeded.attributes
    assert succeeded.attributes["interference.model"] == "m"
    assert ids(broken.observed.headers[0]["traceparent"]) == (server.trace_id, failed.span_id)
    assert sent[2] == (server.trace_id, succeeded.span_id)

    # no prompt or answer text anywhere
    for span in spans:
        for value in [*span.attributes.values(), span.name]:
            text = str(value)
            assert "purple elephant" not in text
            assert "Hello from" not in text


def test_the_httpx_client_carries_the_traceparent_too(
    receiver: OTLPReceiver, upstream: FakeUpstream, broken: FakeUpstream
) -> None:
    """``client: httpx`` (proxies, private CAs) sends the attempt's ``traceparent`` as the
    default client does."""
    config = settings(upstream, broken, telemetry={"otlp_endpoint": receiver.url})
    config["providers"]["oai"]["client"] = "httpx"
    app = create_app(Config.model_validate(config))
    with TestClient(app) as client:
        headers = {"traceparent": traceparent(), "x-request-id": "via-httpx"}
        assert client.post("/v1/chat/completions", json=ASK, headers=headers).status_code == 200
    spans = receiver.wait_for(2, timeout=5)
    (attempt,) = children(spans, request_span(spans, "via-httpx"))
    assert ids(upstream.observed.headers[0]["traceparent"]) == (TRACE_ID, attempt.span_id)


def test_a_failed_request_marks_its_span(
    receiver: OTLPReceiver, upstream: FakeUpstream, broken: FakeUpstream
) -> None:
    """Every deployment failing: the request's SERVER span has status ERROR and error.type,
    its one attempt too."""
    config = settings(upstream, broken, telemetry={"otlp_endpoint": receiver.url})
    config["models"]["flaky"]["fallbacks"] = []
    app = create_app(Config.model_validate(config))
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.post(
            "/v1/chat/completions", json={**ASK, "model": "flaky"}, headers={"x-request-id": "r1"}
        )
        assert answer.status_code >= 500
    spans = receiver.wait_for(2, timeout=5)
    server = request_span(spans, "r1")
    assert server.status == "ERROR"
    assert server.attributes["error.type"]
    (attempt,) = children(spans, server)
    assert attempt.status == "ERROR"
    assert attempt.attributes["error.type"] == "upstream_error"


def test_the_standard_variables_name_the_endpoint(
    monkeypatch: pytest.MonkeyPatch, receiver: OTLPReceiver
) -> None:
    assert traces_url(TelemetryConfig()) is None
    assert traces_url(TelemetryConfig(otlp_endpoint="http://h:4318/")) == "http://h:4318/v1/traces"
    assert traces_url(TelemetryConfig(otlp_endpoint="http://h:4318/v1/traces")) == (
        "http://h:4318/v1/traces"
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318")
    assert traces_url(TelemetryConfig()) == "http://base:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://signal:4318/custom")
    assert traces_url(TelemetryConfig()) == "http://signal:4318/custom"  # as it is
    assert traces_url(TelemetryConfig(otlp_endpoint="http://h:1")) == "http://h:1/v1/traces"

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{receiver.url}/v1/traces")
    tracer = make_tracer(TelemetryConfig())
    assert tracer is not None
    tracer.attempt("chat", "local", "smollm2", deployment="d", model="m", stream=False).end()
    tracer.shutdown()
    (span,) = receiver.wait_for(1, timeout=5)
    assert span.kind == "INTERNAL"  # the in-process model
    assert span.attributes["gen_ai.provider.name"] == "llama_cpp"


def test_missing_packages_are_a_clear_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(ConfigError, match=r"pip install 'interference\[otel\]'"):
        make_tracer(TelemetryConfig(otlp_endpoint="http://127.0.0.1:4318"))


#: nothing of OpenTelemetry's loads without an endpoint (redis-py, which loads its metrics SDK
#: when it is installed, is imported only with storage.redis_url)
TRACING_MODULES = ("opentelemetry",)
#: an import hook making OpenTelemetry look uninstalled
NO_OTEL = """
import importlib.abc
class NoOtel(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(name)
        return None
sys.meta_path.insert(0, NoOtel())
"""


@pytest.mark.parametrize("installed", [True, False], ids=["otel-installed", "otel-absent"])
def test_tracing_off_loads_no_tracing(upstream: FakeUpstream, installed: bool) -> None:
    """Without an endpoint, creating the app and serving a request load nothing of OpenTelemetry's
    tracing, and need none of it installed."""
    script = f"""
import sys
{"" if installed else NO_OTEL}
from starlette.testclient import TestClient
from interference.api.app import create_app
from interference.config import Config
config = {{
    "providers": {{"oai": {{"kind": "openai", "base_url": "{upstream.url}/v1"}}}},
    "models": {{"m": {{"deployments": [{{"provider": "oai", "model": "up"}}]}}}},
    "openai_aliases": False,
}}
app = create_app(Config.model_validate(config))
with TestClient(app) as client:
    answer = client.post("/v1/chat/completions", json={ASK!r})
    assert answer.status_code == 200, answer.text
print(sorted(name for name in sys.modules if name.startswith({TRACING_MODULES!r})))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert "traceparent" not in upstream.observed.headers[-1]


def test_capture_content_puts_the_prompt_and_the_answer_in_the_attempt_span(
    receiver: OTLPReceiver, upstream: FakeUpstream, broken: FakeUpstream
) -> None:
    telemetry = {"otlp_endpoint": receiver.url, "capture_content": True}
    config = Config.model_validate(settings(upstream, broken, telemetry=telemetry))
    texts = {}
    with TestClient(create_app(config), raise_server_exceptions=False) as client:
        for stream in (False, True):
            answer = client.post(
                "/v1/chat/completions",
                json={**ASK, "stream": stream},
                headers={"x-request-id": f"req-capture-{stream}"},
            )
            assert answer.status_code == 200
            if stream:
                events = [
                    json.loads(line[6:])
                    for line in answer.text.splitlines()
                    if line.startswith("data: {")
                ]
                texts[stream] = "".join(
                    e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]
                )
            else:
                texts[stream] = answer.json()["choices"][0]["message"]["content"]
    spans = receiver.wait_for(4, timeout=5)  # the lifespan's end flushed them
    for stream, text in texts.items():
        assert text
        (attempt,) = children(spans, request_span(spans, f"req-capture-{stream}"))
        asked = json.loads(attempt.attributes["gen_ai.input.messages"])
        assert asked == [{"role": "user", "parts": [{"type": "text", "content": PROMPT}]}]
        said = json.loads(attempt.attributes["gen_ai.output.messages"])
        assert said == [
            {"role": "assistant", "parts": [{"type": "text", "content": text}],
             "finish_reason": "stop"}
        ]  # fmt: skip
