"""The gateway under concurrent load while its upstreams misbehave, with bounded run time.

The real app (``create_app``) is served by uvicorn (httptools, uvloop, as ``interference serve``
runs it) on a loopback port, in a thread with its own event loop, in front of real HTTP fake
upstreams (``tests/support/upstream.py``): one healthy, the others refusing, hanging before their
first byte, cutting or stalling streams, answering malformed JSON, 500 or 429, or endless bodies, an
endless SSE event or a huge response head. Many clients at once (httpx, streamed and not) must each
get a complete answer (the right deployment's, through fallbacks where one is healthy) or an
OpenAI-style error (a status with an ``{"error": ...}`` body, or an error event and ``[DONE]``
once a stream has started), within the gateway's bounds (seconds here).

Afterwards nothing may be left behind: once in-flight work has ended (polled for a few seconds),
the server loop's tasks, the process's open file descriptors, the deployments' in-flight counts and
every upstream pool (no connection in use, every slot free) are back where they were before the
load. The pooled keep-alive upstream connections are the one thing legitimately kept; they are
closed before each comparison (after checking that each is idle in its pool), on both sides of the
baseline alike.

The size limits on upstream answers (``upstream.client.MAX_BODY``, ``sse.MAX_EVENT``) are
lowered for the load tests so that the endless bodies cost little; one test runs at the real
limits.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from interference.api.app import create_app
from interference.config import Config, config_from_dict
from interference.providers.http import HTTPProvider
from interference.upstream import client as upstream_client
from interference.upstream import sse
from tests.support.openai_fake import openai_upstream
from tests.support.upstream import FakeUpstream, loopback_socket, refused_url, start_serving

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds in /proc/self/fd"),
]

T = TypeVar("T")
HI = [{"role": "user", "content": "hi"}]
# the deployments' bounds in seconds: short where the fault is a hang, roomy elsewhere (load on a
# busy machine is no fault)
FAST: dict[str, float] = {"connect": 1, "first_token": 1, "idle": 1, "total": 2}
SLACK: dict[str, float] = {"connect": 5, "first_token": 5, "idle": 5, "total": 5}
CLIENT_TIMEOUT = 15.0  # well above every bound of the gateway
BOUND = 8.0  # the longest any request may take here (the longest bound is 5 s)
QUICK = 3.0  # ... one that meets no hang: its fault is seen as such, not when a timeout fires
HUGE = 64 << 10  # bytes per piece of an endless body


def full_text(name: str) -> str:
    return f"Hello from {name} w0 w1 w2 w3"  # openai_upstream(name)'s answer


# --- an upstream of endless bodies and huge heads -----------------------------------------------


def huge_upstream() -> FakeUpstream:
    """Answers by the upstream model id asked for: ``endless`` (a body past every size limit:
    JSON, or an SSE event that never gets its blank line), ``endless-after-content`` (a streamed
    one after a first content chunk), ``endless-error`` (a 500 with such a body), ``big-head`` (a
    correct answer behind a 100 KiB response header)."""
    upstream: FakeUpstream

    def chunk(delta: dict[str, Any]) -> bytes:
        body = {
            "id": "chatcmpl-huge",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    async def endless(prefix: bytes) -> AsyncIterator[bytes]:
        # 16 MiB past the limits, then silence: were they not enforced, a timeout would end the
        # request, and what it buffered meanwhile would be bounded all the same
        size = max(upstream_client.MAX_BODY, sse.MAX_EVENT) + (16 << 20)
        piece = b"x" * HUGE
        try:
            yield prefix
            for _ in range(size // HUGE):
                yield piece
                await asyncio.sleep(0)
            await asyncio.sleep(60)
        finally:
            upstream.observed.disconnects += 1

    async def completions(request: Request) -> Response:
        body = await request.json()
        upstream.observed.requests.append(body)
        model = body["model"]
        if model == "big-head":
            answer = {
                "id": "chatcmpl-huge",
                "object": "chat.completion",
                "created": 1,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Hello from huge"},
                        "finish_reason": "stop",
                    }
                ],
            }
            return JSONResponse(answer, headers={"x-big": "v" * (100 << 10)})
        if model == "endless-error":
            events = endless(b'{"error": {"message": "')
            return StreamingResponse(events, status_code=500, media_type="application/json")
        if not body.get("stream"):
            events = endless(b'{"id": "x", "choices": [{"message": {"content": "')
            return StreamingResponse(events, media_type="application/json")
        prefix = chunk({"role": "assistant", "content": ""})
        if model == "endless-after-content":
            prefix += chunk({"content": "Hello from huge"})
        events = endless(prefix + b'data: {"choices": "')
        return StreamingResponse(events, media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    upstream = FakeUpstream(app)
    return upstream


# --- the gateway, served in a thread with its own loop ----------------------------------------


class Gateway:
    """``create_app(config)`` served by uvicorn on a free loopback port, in a thread whose event
    loop (uvloop) the test can inspect."""

    thread_name = "interference-gateway"

    def __init__(self, config: Config) -> None:
        self.app = create_app(config)
        self.state = self.app.state.interference
        self._sock = loopback_socket()
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                log_config=None,
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=1,
            )
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            self.loop = runner.get_loop()
            runner.run(self._server.serve(sockets=[self._sock]))

    def start(self) -> Gateway:
        start_serving(self._server, self._thread, "the gateway")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._sock.close()

    def call(self, function: Callable[[], Awaitable[T]]) -> T:
        """Run ``function()`` in the gateway's loop and return its result."""
        assert self.loop is not None

        async def run() -> T:
            return await function()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=5)


@dataclass(frozen=True)
class Snapshot:
    tasks: Counter[str]  # the server loop's tasks, by coroutine
    fds: Counter[str]  # the process's open file descriptors, by kind

    def differences(self, now: Snapshot) -> list[str]:
        """What ``now`` has more (+) and less (-) than this baseline."""
        out = []
        for what, then, later in (("tasks", self.tasks, now.tasks), ("fds", self.fds, now.fds)):
            if then != later:
                out.append(f"{what}: +{dict(later - then)} -{dict(then - later)}")
        return out


def poll(condition: Callable[[], bool], tries: int) -> None:
    """Check ``condition`` up to ``tries`` times, 20 ms apart, until it holds (the caller asserts
    what it needs afterwards)."""
    for _ in range(tries):
        if condition():
            return
        time.sleep(0.02)


def assert_all_hung_up(upstream: FakeUpstream) -> None:
    """Each request ``upstream`` got was hung up on (polled for up to a second)."""
    poll(lambda: upstream.observed.disconnects >= len(upstream.observed.requests), 50)
    assert upstream.observed.disconnects == len(upstream.observed.requests)


def open_fds() -> Counter[str]:
    kinds: Counter[str] = Counter()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, closed since
            continue
        kinds[target.split(":")[0] if ":" in target else "file"] += 1
    return kinds


def snapshot(gateway: Gateway) -> tuple[Snapshot, list[str]]:
    """The gateway's tasks and the process's fds once the upstream pools' idle connections are
    closed, and what is still in use (connections, pool slots, deployments' in-flight counts)."""

    async def inspect() -> tuple[Counter[str], list[str]]:
        busy: list[str] = []
        for provider in gateway.state.providers:
            assert isinstance(provider, HTTPProvider)
            client = provider.client
            in_use = len(client._open - set(client._idle))
            if in_use:
                busy.append(f"{provider.name}: {in_use} upstream connection(s) in use")
            taken = provider.config.max_connections - client._slots._value
            if taken:
                busy.append(f"{provider.name}: {taken} pool slot(s) taken")
            if not in_use and not taken:  # (closing one in use would hide it)
                await client.aclose()  # the idle keep-alive connections: legitimately kept
        for model in gateway.state.router.models.values():
            for deployment in model.deployments:
                if deployment.in_flight:
                    busy.append(f"{deployment.name}: in_flight={deployment.in_flight}")
        current = asyncio.current_task()
        tasks = Counter(
            getattr(task.get_coro(), "__qualname__", repr(task.get_coro()))
            for task in asyncio.all_tasks()
            if task is not current
        )
        return tasks, busy

    tasks, busy = gateway.call(inspect)
    time.sleep(0.05)  # the upstreams close their side of what was just closed
    # Garbage of earlier tests in this process (a socket or file left to its finalizer) is
    # collected now, not between a baseline and a comparison, where it would read as our change.
    gc.collect()
    return Snapshot(tasks, open_fds()), busy


def settle(gateway: Gateway, baseline: Snapshot | None = None, seconds: float = 8.0) -> Snapshot:
    """Poll until nothing is in use and everything is back to ``baseline`` (without one: the same
    twice in a row, a baseline to take)."""
    deadline = time.monotonic() + seconds
    previous = None
    while True:
        now, busy = snapshot(gateway)
        problems = busy + (baseline or previous or now).differences(now)
        if not problems and (baseline or previous):
            return now
        previous = None if busy else now
        if time.monotonic() > deadline:
            pytest.fail(f"not back to the baseline after {seconds:g} s: {'; '.join(problems)}")
        time.sleep(0.1)


# --- the configuration: which deployments each public model has -------------------------------


@dataclass(frozen=True)
class Expect:
    """What a client must get: ``ok`` (200, the whole answer of ``upstream``), ``cut`` (200,
    some of ``upstream``'s answer, then an error event with ``code`` and ``[DONE]``) or ``error``
    (``status`` with an OpenAI error body with ``code``)."""

    kind: str
    upstream: str = ""
    status: int = 200
    code: str = ""


def ok(upstream: str) -> Expect:
    return Expect("ok", upstream)


def cut(upstream: str, code: str) -> Expect:
    return Expect("cut", upstream, code=code)


def error(status: int, code: str) -> Expect:
    return Expect("error", status=status, code=code)


UPSTREAM_ERROR = "upstream_error"
TIMEOUT = "upstream_timeout"
BAD, HUNG = error(502, UPSTREAM_ERROR), error(504, TIMEOUT)
LIMITED = error(429, "rate_limit_exceeded")

# public model: (deployments as provider[:upstream model], fallbacks, streamed, not streamed)
MODELS: dict[str, tuple[list[str], list[str], Expect, Expect]] = {
    "good": (["good"], [], ok("good"), ok("good")),
    "via-refused": (["refused", "good"], [], ok("good"), ok("good")),
    "via-hang": (["hang", "good"], [], ok("good"), ok("good")),
    "via-500": (["e500", "good"], [], ok("good"), ok("good")),
    "via-429": (["e429", "good"], [], ok("good"), ok("good")),
    "via-malformed": (["malformed", "good"], [], ok("good"), ok("good")),
    "via-cut": (["cut0", "good"], [], ok("good"), ok("cut0")),  # a JSON answer is not cut
    "via-endless": (["huge:endless", "good"], [], ok("good"), ok("good")),
    "via-endless-error": (["huge:endless-error", "good"], [], ok("good"), ok("good")),
    "via-big-head": (["huge:big-head", "good"], [], ok("good"), ok("good")),
    "via-fallback": (["e500", "malformed", "refused"], ["good"], ok("good"), ok("good")),
    "cut-mid": (["cutmid"], [], cut("cutmid", UPSTREAM_ERROR), ok("cutmid")),
    "hang-mid": (["hangmid"], [], cut("hangmid", TIMEOUT), ok("hangmid")),
    "endless-mid": (
        ["huge:endless-after-content"],
        [],
        cut("huge", UPSTREAM_ERROR),
        error(502, UPSTREAM_ERROR),
    ),
    "all-bad": (["refused", "e500", "malformed"], [], BAD, BAD),
    "hang-only": (["hang"], [], HUNG, HUNG),
    "rate-limited": (["e429"], [], LIMITED, LIMITED),
    "slow": (["slow"], [], ok("slow"), ok("slow")),  # only ever abandoned
}

FAULTS: dict[str, dict[str, Any]] = {
    "good": {},
    "slow": {"chunk_delay": 0.05},
    "hang": {"hang_before_first_byte": 30},
    "e500": {"status": 500},
    "e429": {"status": 429},  # no Retry-After: the deployment is not put to rest
    "malformed": {"malformed": True},
    "cut0": {"cut_after_chunks": 0},  # before any content: falls back
    "cutmid": {"cut_after_chunks": 2},  # after some: an error event
    "hangmid": {"hang_after_chunks": 2, "hang_seconds": 30},
}
FAST_ONES = {"hang", "refused"}  # the providers whose faults are hangs
SLOW_WORDS = 40  # "slow" streams 40 chunks 50 ms apart: 2 s, abandoned well before their end


def gateway_config(upstreams: dict[str, FakeUpstream], refused: str) -> Config:
    urls = {name: upstream.url for name, upstream in upstreams.items()} | {"refused": refused}

    def timeouts(name: str) -> dict[str, float]:
        if name == "hangmid":
            return {**SLACK, "idle": FAST["idle"]}
        return FAST if name in FAST_ONES else SLACK

    models = {}
    for public, (deployments, fallbacks, _, _) in MODELS.items():
        entries = []
        for deployment in deployments:
            provider, _, model = deployment.partition(":")
            entries.append({"provider": provider, "model": model or "upstream-model"})
        models[public] = {"deployments": entries, "fallbacks": fallbacks}
    return config_from_dict(
        {
            "providers": {
                name: {"kind": "openai", "base_url": f"{url}/v1", "timeouts": timeouts(name)}
                for name, url in urls.items()
            },
            "models": models,
            "routing": {
                "strategy": "ordered",
                "cooldown": {"failures": 1_000_000},  # every request meets its faults
            },
        }
    )


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, FakeUpstream]]:
    started: dict[str, FakeUpstream] = {}
    try:
        for name, faults in FAULTS.items():
            upstream = openai_upstream(name, words=SLOW_WORDS if name == "slow" else 5)
            for key, value in faults.items():
                setattr(upstream.faults, key, value)
            started[name] = upstream.start()
        started["huge"] = huge_upstream().start()
        yield started
    finally:
        for upstream in started.values():
            upstream.stop()


@pytest.fixture(scope="module")
def gateway(upstreams: dict[str, FakeUpstream]) -> Iterator[Gateway]:
    server = Gateway(gateway_config(upstreams, refused_url())).start()
    yield server
    server.stop()


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream_client, "MAX_BODY", 1 << 20)
    monkeypatch.setattr(sse, "MAX_EVENT", 256 << 10)


@pytest.fixture
def gateway_errors(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The errors the gateway's thread logged (an unexpected exception, an asyncio complaint)."""
    caplog.set_level(logging.WARNING)

    def errors() -> list[str]:
        return [
            f"{r.name}: {r.getMessage()}"
            for r in caplog.records
            if r.threadName == Gateway.thread_name and r.levelno >= logging.ERROR
        ]

    return errors


# --- the clients -------------------------------------------------------------------------------


@dataclass
class Outcome:
    model: str
    stream: bool
    status: int = 0
    kind: str = ""  # ok, cut or error
    text: str = ""
    code: str = ""
    seconds: float = 0.0
    problem: str = ""  # what is wrong with the answer itself, if anything


def read_answer(outcome: Outcome, status: int, raw: bytes) -> None:
    """Fill ``outcome`` from a response, or say in ``outcome.problem`` why it is not a complete
    answer nor an OpenAI-style error."""
    outcome.status = status
    try:
        if status != 200:
            body = json.loads(raw)
            assert set(body) == {"error"}, body
            assert isinstance(body["error"]["message"], str), body
            assert isinstance(body["error"]["type"], str), body
            outcome.kind, outcome.code = "error", body["error"]["code"]
        elif not outcome.stream:
            body = json.loads(raw)
            assert body["object"] == "chat.completion", body
            assert body["model"] == outcome.model, body
            assert body["choices"][0]["finish_reason"] == "stop", body
            outcome.kind, outcome.text = "ok", body["choices"][0]["message"]["content"]
        else:
            text = raw.decode()
            assert text.endswith("\n\ndata: [DONE]\n\n"), text[-200:]
            events = [json.loads(e.removeprefix("data: ")) for e in text.split("\n\n")[:-2]]
            assert events, text
            outcome.text = "".join(
                e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices")
            )
            if "error" in events[-1]:
                assert set(events[-1]) == {"error"}, events[-1]
                assert isinstance(events[-1]["error"]["message"], str), events[-1]
                outcome.kind, outcome.code = "cut", events[-1]["error"]["code"]
            else:
                assert all(e["model"] == outcome.model for e in events), events
                assert events[-1]["choices"][0]["finish_reason"] == "stop", events[-1]
                outcome.kind = "ok"
    except (AssertionError, KeyError, IndexError, TypeError, ValueError) as exc:
        outcome.problem = f"{type(exc).__name__}: {exc}"


async def ask(client: httpx.AsyncClient, model: str, stream: bool) -> Outcome:
    outcome = Outcome(model, stream)
    started = time.monotonic()
    body = {"model": model, "messages": HI, "stream": stream}
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            raw = await response.aread()
        read_answer(outcome, response.status_code, raw)
    except httpx.HTTPError as exc:  # a hang (the client's timeout) or a broken answer
        outcome.problem = f"{type(exc).__name__}: {exc}"
    outcome.seconds = time.monotonic() - started
    return outcome


def mismatch(outcome: Outcome) -> str | None:
    """Why ``outcome`` is not what its model's faults make it, or None."""
    _, _, streamed, whole = MODELS[outcome.model]
    expect = streamed if outcome.stream else whole
    where = f"{outcome.model} ({'stream' if outcome.stream else 'non-stream'})"
    if outcome.problem:
        return f"{where}: {outcome.problem}"
    if outcome.seconds > (BOUND if "hang" in outcome.model else QUICK):
        return f"{where}: took {outcome.seconds:.1f} s"
    got = (outcome.kind, outcome.status, outcome.code)
    if got != (expect.kind, expect.status, expect.code):
        return f"{where}: got {got}, expected {(expect.kind, expect.status, expect.code)}"
    if expect.kind == "ok" and outcome.text != full_text(expect.upstream):
        return f"{where}: answered {outcome.text!r}"
    if expect.kind == "cut":
        name = "Hello from " + expect.upstream
        if not outcome.text.startswith(name) or outcome.text == full_text(expect.upstream):
            return f"{where}: streamed {outcome.text!r} before its error"
    return None


def client_for(gateway: Gateway, timeout: float = CLIENT_TIMEOUT) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=gateway.url,
        timeout=httpx.Timeout(timeout, pool=60),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        trust_env=False,
    )


def run_round(gateway: Gateway, requests: list[tuple[str, bool]]) -> list[Outcome]:
    async def main() -> list[Outcome]:
        async with client_for(gateway) as client:
            return await asyncio.gather(*(ask(client, m, s) for m, s in requests))

    return asyncio.run(main())


EVERY_CASE = [(model, stream) for model in MODELS if model != "slow" for stream in (True, False)]


@pytest.fixture
def baseline(gateway: Gateway, small_limits: None) -> Snapshot:
    """The gateway's state once it has served every case once (what is lazily made is made)."""
    outcomes = run_round(gateway, EVERY_CASE)
    assert [m for m in map(mismatch, outcomes) if m] == []
    return settle(gateway)


# --- the tests ---------------------------------------------------------------------------------


def test_every_client_gets_an_answer_or_an_error_and_nothing_is_left_behind(
    gateway: Gateway,
    upstreams: dict[str, FakeUpstream],
    baseline: Snapshot,
    gateway_errors: Callable[[], list[str]],
) -> None:
    hang = upstreams["hang"]
    hung_before = len(hang.observed.requests)
    requests = EVERY_CASE * 2  # 68 at once (on 64 connections)
    started = time.monotonic()
    outcomes = run_round(gateway, requests) + run_round(gateway, requests)
    elapsed = time.monotonic() - started

    problems = [m for m in map(mismatch, outcomes) if m]
    assert problems == [], f"{len(problems)} of {len(outcomes)}:\n" + "\n".join(problems)
    assert elapsed < 2 * BOUND
    settle(gateway, baseline)
    # each request the hanging upstream got was hung up on when its bound fired
    hung = len(hang.observed.requests) - hung_before
    assert hung == 16  # via-hang and hang-only, streamed and not, twice in each of 2 rounds
    assert_all_hung_up(hang)
    assert gateway_errors() == []


def test_clients_that_go_away_mid_answer_leave_nothing_behind(
    gateway: Gateway,
    upstreams: dict[str, FakeUpstream],
    baseline: Snapshot,
    gateway_errors: Callable[[], list[str]],
) -> None:
    slow, hang = upstreams["slow"], upstreams["hang"]
    slow_before = slow.observed.disconnects, slow.observed.completed_streams

    async def abandon_after_first_content(client: httpx.AsyncClient) -> str:
        body = {"model": "slow", "messages": HI, "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if '"content":"Hello' in line.replace(" ", ""):
                    return "abandoned"  # leaving the block closes the connection
        return "read to its end"

    async def give_up_waiting(stream: bool) -> str:
        async with client_for(gateway, timeout=0.3) as impatient:
            body = {"model": "hang-only", "messages": HI, "stream": stream}
            try:
                await impatient.post("/v1/chat/completions", json=body)
            except httpx.ReadTimeout:
                return "gave up"
        return "answered"

    async def main() -> tuple[list[str], list[str], list[Outcome]]:
        async with client_for(gateway) as client:
            abandoned, gave_up, answered = await asyncio.gather(
                asyncio.gather(*(abandon_after_first_content(client) for _ in range(24))),
                asyncio.gather(*(give_up_waiting(i % 2 == 0) for i in range(16))),
                asyncio.gather(*(ask(client, m, s) for m, s in EVERY_CASE[:16])),
            )
        return abandoned, gave_up, answered

    abandoned, gave_up, answered = asyncio.run(main())
    assert abandoned == ["abandoned"] * 24
    assert gave_up == ["gave up"] * 16
    assert [m for m in map(mismatch, answered) if m] == []
    settle(gateway, baseline)
    assert slow.observed.disconnects - slow_before[0] == 24  # each upstream stream was closed
    assert slow.observed.completed_streams == slow_before[1]
    assert_all_hung_up(hang)
    assert gateway_errors() == []


def test_huge_answers_fail_at_the_real_limits(
    gateway: Gateway, upstreams: dict[str, FakeUpstream], gateway_errors: Callable[[], list[str]]
) -> None:
    huge = upstreams["huge"]
    before = huge.observed.disconnects
    cases = [("via-endless", False), ("endless-mid", True), ("via-big-head", False)]
    outcomes = run_round(gateway, cases)
    assert [m for m in map(mismatch, outcomes) if m] == []  # in QUICK s: not by a timeout
    poll(lambda: huge.observed.disconnects - before >= 2, 100)
    assert huge.observed.disconnects - before == 2  # the endless bodies were hung up on
    settle(gateway)  # and nothing is in use
    assert gateway_errors() == []


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_a_client_that_goes_away_before_the_answer_stops_its_upstream_request(
    gateway: Gateway, upstreams: dict[str, FakeUpstream], stream: bool
) -> None:
    hang = upstreams["hang"]
    # what earlier tests left has ended
    poll(lambda: hang.observed.disconnects == len(hang.observed.requests), 150)
    before = hang.observed.disconnects

    async def give_up() -> None:
        async with client_for(gateway, timeout=0.3) as impatient:
            body = {"model": "hang-only", "messages": HI, "stream": stream}
            with pytest.raises(httpx.ReadTimeout):
                await impatient.post("/v1/chat/completions", json=body)

    asyncio.run(give_up())
    # 0.5 s: the gateway's bound on the attempt is 1 s (stream) or 2 s
    poll(lambda: hang.observed.disconnects > before, 25)
    assert hang.observed.disconnects == before + 1
