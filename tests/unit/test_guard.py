"""The request guard: API keys on every route, request ids, per-client concurrency, draining and
cutting requests at shutdown, unexpected errors, CORS, and that keys never reach the logs."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from interference.api.app import create_app
from interference.api.routes import routes
from interference.config import Config, config_from_dict
from tests.support.fakes import FakeProvider
from tests.support.spec import validate

KEY, OTHER_KEY = "sk-test-Zq8b2F4mK9", "sk-second-Hw3nP7xR"
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "Hi"}]}


def keyed(**server: Any) -> Config:
    return config_from_dict({"server": {"api_keys": [KEY, OTHER_KEY], **server}})


@pytest.fixture
def locked() -> Iterator[TestClient]:
    app = create_app(keyed(), providers=[FakeProvider()])
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def every_route() -> list[tuple[str, str]]:
    """(method, path) of each route the app serves, with a concrete path."""
    out = []
    for route in routes():
        assert isinstance(route, Route)
        path = route.path.replace("{model_id:path}", "fake-model").replace("{name}", "app.js")
        out += [(method, path) for method in sorted(route.methods or ()) if method != "HEAD"]
    return out


def call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    body: dict[str, Any] = CHAT
    if path.endswith("/completions") and "chat" not in path:
        body = {"model": "fake-model", "prompt": "x"}
    elif path.endswith("/embeddings"):
        body = {"model": "fake-model", "input": "x"}
    elif path.startswith("/v1/messages"):
        body = CHAT | {"max_tokens": 5}
    if method == "POST":
        return client.post(path, json=body, headers=headers)
    return client.request(method, path, headers=headers)


PUBLIC = {"/health", "/v1/health"}
#: the web chat's page (and its JSON answer for tools) and assets: public, the page asks for a key
PUBLIC_PAGE = {"/", "/ui/app.js"}
#: the fake provider serves chat only: these routes answer 400 "unsupported" once let in
CHAT_ONLY = {"/v1/completions", "/completions", "/v1/embeddings", "/embeddings"}


def passed(response: httpx.Response, path: str) -> bool:
    """Whether the request got past the guard to its route and was answered there."""
    if path in CHAT_ONLY:
        return response.status_code == 400 and response.json()["error"]["code"] == "unsupported"
    if any(part in path for part in ("/audio/", "/images/", "/moderations")):
        # a chat body is not a speech, image or moderation request, nor a form: the route's
        # own 400 or 415 says it got there
        return response.status_code in (400, 415) and response.json()["error"]["type"] in (
            "invalid_request_error",
            "unsupported_media_type",
        )
    if "{response_id}" in path:  # the route's own answer: no such stored response
        return response.status_code == 404 and response.json()["error"]["param"] == "response_id"
    return response.status_code == 200


@pytest.mark.parametrize(("method", "path"), every_route())
def test_every_route_wants_a_key(locked: TestClient, method: str, path: str) -> None:
    for headers, code in (
        ({}, "missing_api_key"),
        ({"authorization": "Bearer sk-wrong"}, "invalid_api_key"),
        ({"x-api-key": KEY + "x"}, "invalid_api_key"),
        ({"authorization": KEY}, "missing_api_key"),  # no scheme: not a key
        ({"authorization": f"Basic {KEY}"}, "missing_api_key"),
    ):
        response = call(locked, method, path, headers)
        if path in PUBLIC:
            assert response.status_code == 200
            assert response.json() == {"status": "ok", "ready": True}  # nothing more
            continue
        if path == "/":
            assert response.status_code == 200
            assert "base_url" in response.json()
            assert "models" not in response.json()
            assert "aliases" not in response.json()
            continue
        if path in PUBLIC_PAGE:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/javascript")
            continue
        assert response.status_code == 401, (headers, response.text)
        if path.startswith("/v1/messages"):  # Anthropic's envelope, which has no code
            assert response.json()["type"] == "error"
            assert set(response.json()["error"]) == {"type", "message"}
        else:
            validate(response.json(), "ErrorResponse")
            assert response.json()["error"]["code"] == code
        assert response.json()["error"]["type"] == "authentication_error"
        assert KEY not in response.text
    for headers in (
        {"authorization": f"Bearer {KEY}"},
        {"authorization": f"bearer {OTHER_KEY}"},
        {"x-api-key": KEY},
    ):
        response = call(locked, method, path, headers)
        assert passed(response, path), (headers, response.text)
        if path in PUBLIC:
            assert "providers" in response.json()  # the whole body with a key
        if path == "/":
            assert response.json()["models"] == ["fake-model"]


def test_without_keys_every_route_is_open(client: TestClient) -> None:
    for method, path in every_route():
        assert passed(call(client, method, path, {}), path), (method, path)


def test_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERFERENCE_API_KEYS", f" {KEY} ,,{OTHER_KEY}")
    app = create_app(Config(), providers=[FakeProvider()])
    with TestClient(app) as client:
        assert client.get("/v1/models").status_code == 401
        for key in (KEY, OTHER_KEY):
            assert client.get("/v1/models", headers={"x-api-key": key}).status_code == 200


def test_keys_never_reach_the_logs_or_the_configuration_repr(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = keyed()
    assert KEY not in repr(config)
    assert KEY not in str(config.model_dump())
    app = create_app(config, providers=[FakeProvider()])
    with caplog.at_level(logging.DEBUG), TestClient(app) as client:
        client.post("/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {KEY}"})
        client.post("/v1/chat/completions", json=CHAT, headers={"x-api-key": KEY[:-1]})
        client.post(
            "/v1/chat/completions",
            json={**CHAT, "stream": True},
            headers={"authorization": f"Bearer {OTHER_KEY}"},
        )
    lines = [r for r in caplog.records if r.name == "interference.requests"]
    assert len(lines) == 3
    everything = caplog.text + json.dumps([getattr(r, "fields", {}) for r in caplog.records])
    for secret in (KEY, OTHER_KEY, KEY[:-1]):
        assert secret not in everything
    clients = [r.fields["client"] for r in lines]
    assert clients[0].startswith("key:")
    assert clients[0] != clients[2]


def test_request_ids_are_returned_and_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="interference.requests"):
        given = client.get("/v1/models", headers={"x-request-id": "trace-42.a:b"})
        bad = client.get("/v1/models", headers={"x-request-id": "spaces are not kept"})
        missing = client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
    assert given.headers["x-request-id"] == "trace-42.a:b"
    assert bad.headers["x-request-id"].startswith("req_")
    assert missing.status_code == 404
    assert missing.headers["x-request-id"].startswith("req_")
    logged = [r.fields for r in caplog.records]
    assert [f["request_id"] for f in logged] == [
        "trace-42.a:b",
        bad.headers["x-request-id"],
        missing.headers["x-request-id"],
    ]
    assert (logged[2]["status"], logged[2]["error"], logged[2]["model"]) == (
        404,
        "model_not_found",
        "nope",
    )


def test_the_request_line_has_the_answer_figures(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="interference.requests"):
        client.post("/v1/chat/completions", json=CHAT)
        client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    plain, streamed = (r.fields for r in caplog.records)
    assert plain["status"] == 200
    assert plain["deployment"] == "fake/fake-model"
    assert (plain["prompt_tokens"], plain["completion_tokens"], plain["stream"]) == (7, 3, False)
    assert streamed["stream"] is True
    assert streamed["outcome"] == "ok"
    assert streamed["completion_tokens"] == 3
    assert streamed["ttft_ms"] >= 0
    assert streamed["ms"] >= streamed["ttft_ms"]


def test_an_unexpected_error_is_a_500_logged_once_with_its_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(FakeProvider):
        async def chat_reply(self, request: Any, model: str) -> Any:
            raise ZeroDivisionError("secret internals")

    app = create_app(Config(), providers=[Broken()])
    with caplog.at_level(logging.INFO), TestClient(app, raise_server_exceptions=True) as client:
        response = client.post("/v1/chat/completions", json=CHAT)  # nothing raised here
    assert response.status_code == 500
    validate(response.json(), "ErrorResponse")
    assert "secret internals" not in response.text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "ZeroDivisionError" in caplog.text
    assert errors[0].fields["request_id"] == response.headers["x-request-id"]


async def _asgi(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def test_requests_in_flight_are_bounded_per_client() -> None:
    config = keyed(limits={"max_concurrent_per_client": 2})
    release = asyncio.Event()

    class Held(FakeProvider):
        async def chat_reply(self, request: Any, model: str) -> Any:
            await release.wait()
            return await super().chat_reply(request, model)

    async def scenario() -> list[int]:
        app = create_app(config, providers=[Held()])
        async with await _asgi(app) as client:
            first = {"authorization": f"Bearer {KEY}"}
            held = [
                asyncio.create_task(client.post("/v1/chat/completions", json=CHAT, headers=first))
                for _ in range(2)
            ]
            await asyncio.sleep(0.05)
            refused = await client.post("/v1/chat/completions", json=CHAT, headers=first)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "concurrency_limit_exceeded"
            assert refused.headers["retry-after"] == "1"
            other = asyncio.create_task(
                client.post("/v1/chat/completions", json=CHAT, headers={"x-api-key": OTHER_KEY})
            )
            await asyncio.sleep(0.05)
            assert not other.done()  # another key has its own allowance: it is waiting too
            release.set()
            statuses = [r.status_code for r in await asyncio.gather(*held, other)]
            again = await client.post("/v1/chat/completions", json=CHAT, headers=first)
            return [*statuses, again.status_code]

    assert asyncio.run(asyncio.wait_for(scenario(), 10)) == [200, 200, 200, 200]


def test_draining_refuses_new_requests_and_health_says_so(client: TestClient) -> None:
    guard = client.app.state.interference.guard  # type: ignore[attr-defined]
    guard.begin_drain()
    health = client.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "draining"
    assert health.json()["ready"] is False
    refused = client.post("/v1/chat/completions", json=CHAT)
    assert refused.status_code == 503
    validate(refused.json(), "ErrorResponse")
    assert refused.json()["error"]["code"] == "server_shutting_down"
    assert refused.headers["connection"] == "close"


def test_cutting_requests_ends_a_stream_with_an_error_event_and_a_call_with_503() -> None:
    slow = FakeProvider(words=tuple(f"w{i} " for i in range(1000)), delay=0.01)

    async def scenario() -> tuple[str, httpx.Response, int]:
        app = create_app(Config(), providers=[slow])
        guard = app.state.interference.guard
        async with await _asgi(app) as client:
            stream_body = {**CHAT, "stream": True}
            streamed = asyncio.create_task(client.post("/v1/chat/completions", json=stream_body))
            called = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
            await asyncio.sleep(0.3)
            cut = guard.cut_all("shutdown")
            answers = await asyncio.gather(streamed, called)
            return answers[0].text, answers[1], cut

    text, called, cut = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert cut == 2
    events = [e.removeprefix("data: ") for e in text.strip().split("\n\n")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])
    validate(error, "ErrorResponse")
    assert error["error"]["code"] == "server_shutting_down"
    assert '"w0 "' in text  # it had streamed before the cut
    assert called.status_code == 503
    assert called.json()["error"]["code"] == "server_shutting_down"
    assert slow.closed_early.is_set()  # generation stopped upstream


def test_cors_is_off_by_default(client: TestClient) -> None:
    origin = {"origin": "http://evil.example"}
    assert "access-control-allow-origin" not in client.get("/v1/models", headers=origin).headers
    preflight = client.options(
        "/v1/chat/completions",
        headers={**origin, "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_the_configured_origins_only() -> None:
    config = keyed(cors_origins=["http://app.example"])
    app = create_app(config, providers=[FakeProvider()])
    with TestClient(app) as client:
        allowed = {"origin": "http://app.example"}
        preflight = client.options(
            "/v1/chat/completions",
            headers={
                **allowed,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200  # no key needed for the preflight
        assert preflight.headers["access-control-allow-origin"] == "http://app.example"
        refused = client.get("/v1/models", headers=allowed)
        assert refused.status_code == 401  # the page can read why
        assert refused.headers["access-control-allow-origin"] == "http://app.example"
        ok = client.get("/v1/models", headers={**allowed, "x-api-key": KEY})
        assert "x-request-id" in ok.headers["access-control-expose-headers"]
        other = client.get("/v1/models", headers={"origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize(
    ("host", "keys", "warned"),
    [
        ("0.0.0.0", [], True),
        ("192.168.1.20", [], True),
        ("::", [], True),
        ("0.0.0.0", [KEY], False),
        ("127.0.0.1", [], False),
        ("::1", [], False),
        ("localhost", [], False),
    ],
)
def test_a_non_loopback_address_without_keys_is_warned_about(
    caplog: pytest.LogCaptureFixture, host: str, keys: list[str], warned: bool
) -> None:
    from interference.server import warn_if_exposed

    config = config_from_dict({"server": {"host": host, "api_keys": keys}})
    with caplog.at_level(logging.WARNING):
        warn_if_exposed(config)
    assert ("without API keys" in caplog.text) is warned
    assert KEY not in caplog.text


def test_this_machines_anonymous_clients_have_no_concurrency_cap_others_do(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Keys off: programs on this machine (loopback) are the user's own and are not capped (a
    batch job's 1,000 streams met 128 before: issue 18); a client from another machine is, by
    address, and the refusals are written once, naming the setting."""
    config = config_from_dict({"server": {"limits": {"max_concurrent_per_client": 2}}})
    release = asyncio.Event()

    class Held(FakeProvider):
        async def chat_reply(self, request: Any, model: str) -> Any:
            await release.wait()
            return await super().chat_reply(request, model)

    async def burst(client: httpx.AsyncClient, count: int) -> list[asyncio.Task[httpx.Response]]:
        tasks = [
            asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
            for _ in range(count)
        ]
        await asyncio.sleep(0.1)
        return tasks

    async def scenario() -> tuple[list[int], list[int]]:
        app = create_app(config, providers=[Held()])
        local = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        remote = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with (
            httpx.AsyncClient(transport=local, base_url="http://t") as mine,
            httpx.AsyncClient(transport=remote, base_url="http://t") as theirs,
        ):
            held_local = await burst(mine, 6)
            assert not any(task.done() for task in held_local)  # 6 > 2, all waiting
            held_remote = await burst(theirs, 4)
            refused = [task for task in held_remote if task.done()]
            release.set()
            local_statuses = [r.status_code for r in await asyncio.gather(*held_local)]
            remote_statuses = [r.status_code for r in await asyncio.gather(*held_remote)]
            for task in refused:
                assert task.result().json()["error"]["code"] == "concurrency_limit_exceeded"
            return local_statuses, remote_statuses

    with caplog.at_level(logging.WARNING, logger="interference.requests"):
        local_statuses, remote_statuses = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert local_statuses == [200] * 6
    assert sorted(remote_statuses) == [200, 200, 429, 429]
    warnings = [r.getMessage() for r in caplog.records if "refused by" in r.getMessage()]
    assert len(warnings) == 1  # two refusals, one line
    assert "limits.max_concurrent_per_client" in warnings[0]
    assert "a client address had 2 requests in flight" in warnings[0]
