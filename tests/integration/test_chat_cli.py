"""``interference chat`` in a pseudo-terminal (pexpect) and in pipes, against the fake OpenAI
upstream of ``openai_fake.py`` over real HTTP (no model)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pexpect
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from interference.terminal_chat import ChatError, Session
from tests.support.openai_fake import openai_upstream
from tests.support.upstream import FakeUpstream

ANSWER = "Hello from fake w0 w1 w2 w3"
SYSTEM = {"role": "system", "content": "be brief"}
TIMEOUT = 10  # every pexpect wait; a passing run takes well under a second per wait


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    fake = openai_upstream("fake")

    async def models(request: Request) -> JSONResponse:
        ids = ["fake-model", "other-model"]
        return JSONResponse({"object": "list", "data": [{"id": i, "object": "model"} for i in ids]})

    fake.app.router.routes.append(Route("/v1/models", models))
    with fake:
        yield fake


@pytest.fixture(autouse=True)
def _clean(upstream: FakeUpstream) -> None:
    upstream.reset()


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return {**env, "TERM": "dumb", "PYTHONUNBUFFERED": "1", **extra}


def run(upstream: FakeUpstream, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "interference", "chat", "--url", upstream.url, *args]
    return subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, env=environment()
    )


@pytest.fixture
def spawn(upstream: FakeUpstream) -> Iterator[list[pexpect.spawn]]:
    children: list[pexpect.spawn] = []
    yield children
    for child in children:
        if child.isalive():
            child.terminate(force=True)


def _interruptible() -> None:
    """Ctrl-C interrupts the child as on a user's terminal, even when this test run was started
    with SIGINT ignored (a background job of a non-interactive shell is), which it would inherit
    and keep: Python installs no KeyboardInterrupt handler over an ignored SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def repl(spawn: list[pexpect.spawn], url: str, *args: str, **env: str) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "interference", "chat", "--url", url, "--system", "be brief", *args],
        env=environment(**env),
        encoding="utf-8",
        timeout=TIMEOUT,
        preexec_fn=_interruptible,
    )
    spawn.append(child)
    child.expect_exact("/help lists the commands")
    child.expect_exact("> ")
    return child


def say(child: pexpect.spawn, text: str, answer: str = ANSWER) -> None:
    child.sendline(text)
    child.expect_exact(answer)
    child.expect_exact("\n> ")


def exits(child: pexpect.spawn) -> int | None:
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


def test_two_turns_carry_the_history(upstream: FakeUpstream, spawn: list[pexpect.spawn]) -> None:
    child = repl(spawn, f"{upstream.url}/v1", INTERFERENCE_API_KEY="sk-test")
    say(child, "hi")
    say(child, "and then?")
    first, second = upstream.observed.requests
    assert first["model"] == "fake-model"  # the first model of GET /v1/models
    assert first["stream"] is True
    assert first["messages"] == [SYSTEM, {"role": "user", "content": "hi"}]
    assert second["messages"] == [
        SYSTEM,
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "and then?"},
    ]
    assert upstream.observed.headers[0]["authorization"] == "Bearer sk-test"
    child.sendline("/exit")
    assert exits(child) == 0


def test_reset_model_and_help(upstream: FakeUpstream, spawn: list[pexpect.spawn]) -> None:
    child = repl(spawn, upstream.url, "--api-key", "sk-flag")
    say(child, "hi")
    child.sendline("/reset")
    child.expect_exact("(conversation forgotten)")
    say(child, "fresh start")
    assert upstream.observed.requests[1]["messages"] == [
        SYSTEM,
        {"role": "user", "content": "fresh start"},
    ]
    child.sendline("/model other-model")
    child.expect_exact("(model: other-model)")
    say(child, "who are you?")
    assert upstream.observed.requests[2]["model"] == "other-model"
    assert upstream.observed.headers[2]["authorization"] == "Bearer sk-flag"
    child.sendline("/help")
    child.expect_exact("/reset")
    child.expect_exact("/exit")
    child.sendeof()  # Ctrl-D
    assert exits(child) == 0


def test_an_error_is_one_line_and_the_repl_goes_on(
    upstream: FakeUpstream, spawn: list[pexpect.spawn]
) -> None:
    child = repl(spawn, upstream.url)
    upstream.faults.status = 500
    child.sendline("hi")
    child.expect_exact("error: fake says 500 (x)\r\n> ")
    upstream.faults.status = None
    say(child, "again")
    # the failed turn is not part of the conversation
    assert upstream.observed.requests[-1]["messages"] == [
        SYSTEM,
        {"role": "user", "content": "again"},
    ]
    child.sendintr()  # Ctrl-C at the prompt
    assert exits(child) == 0


def test_ctrl_c_stops_an_answer(upstream: FakeUpstream, spawn: list[pexpect.spawn]) -> None:
    child = repl(spawn, upstream.url)
    upstream.faults.chunk_delay = 0.5
    child.sendline("tell me a long story")
    child.expect_exact("Hello from fake")
    child.sendintr()
    child.expect_exact("(stopped)")
    child.expect_exact("> ")
    deadline = time.monotonic() + 5
    while upstream.observed.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.observed.disconnects == 1  # the HTTP stream was closed
    upstream.faults.chunk_delay = 0
    say(child, "shorter please")
    history = upstream.observed.requests[-1]["messages"]
    assert history[2]["role"] == "assistant"  # the part shown stays in the conversation
    assert history[2]["content"].startswith("Hello from fake")
    assert len(history[2]["content"]) < len(ANSWER)
    child.sendline("/exit")
    assert exits(child) == 0


def test_prompt_prints_exactly_the_answer(upstream: FakeUpstream) -> None:
    done = run(upstream, "-p", "hi", "--model", "m1")
    assert (done.returncode, done.stdout, done.stderr) == (0, ANSWER + "\n", "")
    (request,) = upstream.observed.requests
    assert request["model"] == "m1"
    assert request["messages"] == [{"role": "user", "content": "hi"}]


def test_stdin_alone_and_after_a_prompt(upstream: FakeUpstream) -> None:
    done = run(upstream, stdin="question\n")
    assert (done.returncode, done.stdout, done.stderr) == (0, ANSWER + "\n", "")
    done = run(upstream, "-p", "Write a commit message for this diff:", stdin="+ a line\n")
    assert done.stdout == ANSWER + "\n"
    first, second = upstream.observed.requests
    assert first["messages"] == [{"role": "user", "content": "question"}]
    assert second["messages"] == [
        {"role": "user", "content": "Write a commit message for this diff:\n\n+ a line"}
    ]


def test_one_shot_errors_go_to_stderr(upstream: FakeUpstream) -> None:
    upstream.faults.status = 500
    done = run(upstream, "-p", "hi")
    assert (done.returncode, done.stdout, done.stderr) == (1, "", "error: fake says 500 (x)\n")
    upstream.faults.status = None
    done = run(upstream, stdin="  \n")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("error: nothing to ask")
    done = subprocess.run(
        [sys.executable, "-m", "interference", "chat", "--url", "http://127.0.0.1:9", "-p", "x"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot connect to http://127.0.0.1:9/v1")
    assert done.stderr.count("\n") == 1


def test_an_error_event_in_a_stream_ends_the_turn() -> None:
    """A ``data: {"error": ...}`` event after part of an answer (in process, no server)."""
    events = (
        b'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n'
        b'data: {"error": {"message": "boom", "type": "server_error", "code": "engine"}}\n\n'
        b"data: [DONE]\n\n"
    )
    session = Session("http://127.0.0.1:9", "m", None)
    session.client.close()
    session.client = httpx.Client(
        base_url=session.url,
        transport=httpx.MockTransport(
            lambda request: httpx.Response(
                200, content=events, headers={"content-type": "text/event-stream"}
            )
        ),
    )
    out = io.StringIO()
    with pytest.raises(ChatError) as raised:
        session.ask("hi", out)
    assert str(raised.value) == "error: boom (engine)"
    assert out.getvalue() == "Hi\n"
    assert session.messages == []  # the failed turn is forgotten
    session.close()
