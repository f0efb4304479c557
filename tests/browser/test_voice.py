"""The web chat's voice buttons in headless Chromium with a fake microphone
(``--use-fake-device-for-media-stream``): recording goes to /v1/audio/transcriptions and the
text lands in the input; an answer's read-aloud button fetches /v1/audio/speech and plays it.
Speech and transcription come from a fake OpenAI upstream, through a real server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, MODEL, Watched, sync_api, until
from tests.support.media_fake import TRANSCRIPT, media_upstream
from tests.support.server import ServerProcess, start_server
from tests.support.upstream import FakeUpstream

FAKE_MEDIA = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def media() -> Iterator[FakeUpstream]:
    with media_upstream("voice") as fake:
        yield fake


@pytest.fixture(scope="module")
def voice_gateway(
    upstream: FakeUpstream, media: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    config = f"""
providers:
  up: {{kind: openai, base_url: "{upstream.url}/v1"}}
  media: {{kind: openai, base_url: "{media.url}/v1"}}
models:
  {MODEL}: {{deployments: [{{provider: up, model: upstream-model}}], endpoints: [chat]}}
  whisper-1: {{deployments: [{{provider: media}}], endpoints: [transcriptions]}}
  tts-1: {{deployments: [{{provider: media}}], endpoints: [speech]}}
openai_aliases: false
"""
    running = start_server(tmp_path_factory.mktemp("voice"), config)
    yield running
    assert running.stop() == 0, running.log.read_text()[-3000:]


@pytest.fixture
def page(voice_gateway: ServerProcess, media: FakeUpstream) -> Iterator[Watched]:
    media.reset()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, *FAKE_MEDIA]
        )
        context = browser.new_context(viewport={"width": 1100, "height": 760})
        context.grant_permissions(["microphone"])
        watched = Watched(context.new_page())
        watched.page.on("pageerror", lambda exc: watched.errors.append(str(exc)))
        watched.open(voice_gateway.url)
        yield watched
        browser.close()


def test_the_microphone_fills_the_input(page: Watched, media: FakeUpstream) -> None:
    p: Any = page.page
    # the chat models only: the speech and transcription models are not offered for chat
    assert p.evaluate("[...document.querySelector('#model').options].map(o => o.value)") == [MODEL]
    mic = p.locator("#mic")
    mic.wait_for(state="visible")
    mic.click()
    until(p, "document.querySelector('#mic').getAttribute('aria-pressed') === 'true'")
    time.sleep(0.8)  # the fake device's tone, recorded for a moment
    mic.click()
    until(p, f"document.querySelector('#input').value === {TRANSCRIPT!r}")
    (seen,) = media.observed.requests
    assert seen["path"] == "/v1/audio/transcriptions"
    upload = seen["files"]["file"]
    assert upload["filename"].startswith("speech.")
    assert upload["size"] > 500  # a real recording, not an empty blob
    assert not page.errors


def test_an_answer_is_read_aloud(page: Watched, media: FakeUpstream, answer: list[str]) -> None:
    p: Any = page.page
    answer[:] = ["Read ", "me."]
    box = p.locator("#input")
    box.fill("Say something.")
    box.press("Enter")
    button = p.locator("#messages .message.assistant .read-aloud")
    button.wait_for(state="visible")
    button.click()
    until(p, "document.querySelector('.read-aloud').textContent === 'Stop reading'")
    (seen,) = media.observed.requests
    assert seen["path"] == "/v1/audio/speech"
    assert (seen["input"], seen["model"], seen["response_format"]) == ("Read me.", "tts-1", "wav")
    until(p, "document.querySelector('.read-aloud').textContent === 'Read aloud'", timeout=5)
    assert not page.errors
