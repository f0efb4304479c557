"""Headless Chromium (Debian's package, driven by Playwright) against a real ``interference
serve`` subprocess whose one model is answered by a fake OpenAI upstream on 127.0.0.1."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.openai_fake import openai_upstream
from tests.support.server import ServerProcess, start_server
from tests.support.upstream import FakeUpstream

CHROMIUM = "/usr/bin/chromium"
MODEL = "fake-chat"
KEY = "sk-browser-Qw7nV2"
#: the closed network refuses Chromium's own background connections: they are turned off
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

try:
    from playwright import sync_api
except ImportError:  # pragma: no cover - the test extra has it
    sync_api = None


def _missing() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing: `make install-test` installs Debian's chromium package"
    if sync_api is None:
        return "playwright is not installed: `make install-test` installs it"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    missing = _missing()
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)
            if missing:
                item.add_marker(pytest.mark.skip(reason=missing))


def gateway_config(upstream: FakeUpstream, keys: tuple[str, ...] = ()) -> str:
    api_keys = ", ".join(keys)
    return f"""
server: {{api_keys: [{api_keys}]}}
providers:
  up: {{kind: openai, base_url: "{upstream.url}/v1"}}
models:
  {MODEL}:
    deployments: [{{provider: up, model: upstream-model}}]
  second-model:
    deployments: [{{provider: up, model: upstream-model}}]
openai_aliases: false
routing:
  cooldown: {{failures: 1000, seconds: 1}}
"""


#: the content of the fake's streamed answers, piece by piece (empty: its default words)
ANSWER: list[str] = []


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with openai_upstream("up", words=6, pieces=ANSWER) as fake:
        yield fake


@pytest.fixture
def answer(upstream: FakeUpstream) -> list[str]:
    """Set the pieces of the fake upstream's next answers (in place)."""
    return ANSWER


@pytest.fixture(autouse=True)
def _fresh_upstream(request: pytest.FixtureRequest) -> None:
    ANSWER.clear()
    if "upstream" in request.fixturenames:
        fake: FakeUpstream = request.getfixturevalue("upstream")
        fake.reset()


@pytest.fixture(scope="module")
def gateway(
    upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    running = start_server(tmp_path_factory.mktemp("gateway"), gateway_config(upstream))
    yield running
    assert running.stop() == 0, running.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def keyed_gateway(
    upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    running = start_server(tmp_path_factory.mktemp("keyed"), gateway_config(upstream, (KEY,)))
    yield running
    assert running.stop() == 0, running.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


def until(page: Any, expression: str, timeout: float = 10) -> None:
    """Until the JavaScript ``expression`` is true in the page. (Playwright's
    ``wait_for_function`` polls with ``eval``, which the page's CSP forbids.)"""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout} s: {expression}"
        time.sleep(0.03)


def open_key_dialog(page: Any) -> None:
    """Open the API key dialog, as a user does with the "API key" button.

    A fresh page loads its models first, and a 401 there opens the dialog by itself:
    wait for that to settle, or the click can land under the opening dialog."""
    until(
        page,
        "document.querySelector('#key-dialog').open"
        " || document.querySelector('#model').options.length > 0",
    )
    dialog = page.locator("#key-dialog")
    if not dialog.is_visible():
        page.locator("#set-key").click()
    dialog.wait_for(state="visible")


@dataclass
class Watched:
    """A page and what it did that a safe page never does."""

    page: Any
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # uncaught exceptions and console errors
    console: list[str] = field(default_factory=list)

    def open(self, url: str) -> Any:
        self.page.goto(url)
        until(self.page, "document.querySelector('#model').options.length > 0")
        return self.page


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    page = context.new_page()
    page.set_default_timeout(float(os.environ.get("BROWSER_TIMEOUT_MS", "10000")))
    seen = Watched(page)

    def on_dialog(dialog: Any) -> None:
        seen.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: seen.errors.append(str(exc)))
    page.on("console", lambda msg: seen.console.append(f"{msg.type}: {msg.text}"))
    yield seen
    context.close()
