"""The web chat page in headless Chromium, against a real server and a fake upstream."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import KEY, MODEL, Watched, until
from tests.support.server import ServerProcess, start_server
from tests.support.upstream import FakeUpstream

ANSWERS = "#messages .message.assistant"
LAST_ANSWER = f"{ANSWERS} >> nth=-1"
SCREENSHOT = Path(__file__).parents[2] / "docs" / "screenshot.png"


def send(page: Any, text: str) -> None:
    box = page.locator("#input")
    box.click()
    box.fill(text)
    box.press("Enter")


def wait_done(page: Any) -> None:
    """Until the answer being streamed has ended (the Send button is back)."""
    page.locator("#send").wait_for(state="visible")
    until(page, "!document.querySelector('#messages .message.streaming')")


def test_page_assets_and_csp(gateway: ServerProcess) -> None:
    page = httpx.get(gateway.url, headers={"accept": "text/html"})
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "<script>" not in page.text  # no inline script: only /ui/ files
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        asset = httpx.get(f"{gateway.url}/ui/{name}")
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(kind)
        assert "max-age" in asset.headers["cache-control"]
        again = httpx.get(
            f"{gateway.url}/ui/{name}", headers={"if-none-match": asset.headers["etag"]}
        )
        assert again.status_code == 304
    assert "models" in httpx.get(gateway.url).json()  # JSON clients keep their answer


def test_send_stream_and_find_it_after_a_reload(
    watched: Watched, gateway: ServerProcess, upstream: FakeUpstream
) -> None:
    upstream.faults.chunk_delay = 0.12
    page = watched.open(gateway.url)
    page.select_option("#model", "second-model")
    page.select_option("#model", MODEL)
    box = page.locator("#input")
    box.click()
    box.type("first line")
    box.press("Shift+Enter")  # a new line, not a send
    box.type("second line")
    assert page.locator(".message").count() == 0
    box.press("Enter")
    answer = page.locator(LAST_ANSWER).locator(".content")
    lengths: list[int] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lengths.append(len(answer.text_content() or ""))
        if page.locator("#messages .message.streaming").count() == 0 and lengths[-1]:
            break
        time.sleep(0.03)
    growing = sorted(set(lengths) - {0})
    assert len(growing) >= 3, lengths  # the answer grew piece by piece
    assert lengths == sorted(lengths)
    wait_done(page)
    assert answer.text_content() == "Hello from up w0 w1 w2 w3 w4"
    user = page.locator("#messages .message.user .content")
    assert user.text_content() == "first line\nsecond line"
    sent = upstream.observed.requests[-1]
    assert sent["messages"][-1] == {"role": "user", "content": "first line\nsecond line"}
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    meta = page.locator(LAST_ANSWER).locator(".meta").text_content() or ""
    assert f"{MODEL} · via up/upstream-model · 6 tokens" in meta, meta
    assert "tok/s" in meta
    assert page.locator("#title").text_content() == "first line second line"

    page.reload()
    until(page, "document.querySelector('#model').options.length > 0")
    item = page.locator("#conversations li .open", has_text="first line second line")
    item.click()
    assert page.locator(LAST_ANSWER).locator(".content").text_content() == (
        "Hello from up w0 w1 w2 w3 w4"
    )
    # a second turn sends the history; regenerate replaces the last answer
    send(page, "and again")
    wait_done(page)
    assert len(upstream.observed.requests[-1]["messages"]) == 3
    page.locator(LAST_ANSWER).get_by_role("button", name="Regenerate").click()
    wait_done(page)
    assert page.locator(ANSWERS).count() == 2
    assert len(upstream.observed.requests[-1]["messages"]) == 3
    assert not watched.errors


def test_rename_new_chat_and_delete(watched: Watched, gateway: ServerProcess) -> None:
    page = watched.open(gateway.url)
    send(page, "to be renamed")
    wait_done(page)
    item = page.locator("#conversations li").first
    item.get_by_role("button", name="Rename to be renamed").click()
    rename = page.locator("#conversations .rename-input")
    rename.fill("My chat")
    rename.press("Enter")
    assert page.locator("#conversations li .open").first.text_content() == "My chat"
    page.locator("#new-chat").click()
    assert page.locator("#messages .message").count() == 0
    send(page, "another one")
    wait_done(page)
    assert page.locator("#conversations li").count() == 2
    page.reload()
    until(page, "document.querySelector('#model').options.length > 0")
    titles = page.locator("#conversations li .open").all_text_contents()
    assert titles == ["another one", "My chat"]
    delete = page.get_by_role("button", name="Delete My chat")
    delete.click()
    delete.click()  # a second click confirms
    assert page.locator("#conversations li .open").all_text_contents() == ["another one"]


def test_stop_ends_the_generation_upstream(
    watched: Watched, gateway: ServerProcess, upstream: FakeUpstream
) -> None:
    upstream.faults.chunk_delay = 0.2
    answer = [f"word{i} " for i in range(200)]
    from tests.browser.conftest import ANSWER

    ANSWER[:] = answer
    page = watched.open(gateway.url)
    send(page, "write forever")
    until(
        page,
        "(document.querySelector('#messages .message.assistant .content').textContent || '')"
        ".length > 10",
    )
    page.locator("#stop").click()
    wait_done(page)
    deadline = time.monotonic() + 5
    while upstream.observed.disconnects < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.observed.disconnects == 1
    assert upstream.observed.completed_streams == 0
    last = page.locator(LAST_ANSWER)
    assert "stopped" in (last.locator(".meta").text_content() or "")
    assert (last.locator(".content").text_content() or "").startswith("word0 word1")
    assert page.locator("#send").is_visible()


def test_api_errors_are_shown(
    watched: Watched, gateway: ServerProcess, upstream: FakeUpstream
) -> None:
    page = watched.open(gateway.url)
    page.evaluate("document.querySelector('#model').add(new Option('no-such-model'))")
    page.select_option("#model", "no-such-model")
    send(page, "hello?")
    wait_done(page)
    error = page.locator(LAST_ANSWER).locator(".error")
    assert "404" in (error.text_content() or "")
    assert "model_not_found" in (error.text_content() or "")

    page.select_option("#model", MODEL)
    upstream.faults.status = 500
    page.locator(LAST_ANSWER).get_by_role("button", name="Regenerate").click()
    wait_done(page)
    text = page.locator(LAST_ANSWER).locator(".error").text_content() or ""
    assert "502" in text, text
    assert "upstream_error" in text

    upstream.faults.status = None
    upstream.faults.cut_after_chunks = 2  # the stream breaks after it began: an error event
    page.locator(LAST_ANSWER).get_by_role("button", name="Regenerate").click()
    wait_done(page)
    last = page.locator(LAST_ANSWER)
    assert (last.locator(".content").text_content() or "").startswith("Hello from up")
    assert "Error" in (last.locator(".error").text_content() or "")
    assert not watched.errors


INJECTION = [
    "# Title\n\nSome **bold**, *em*, `x<y>` and a [link](https://example.com/a?b=1).\n\n",
    "- one\n- two\n\n1. first\n2. second\n\n",
    "```html\n<script>window.__pwned = 'code'</script>\n```\n\n",
    '<img src=x onerror="window.__pwned = 1; alert(1)">',
    "<script>window.__pwned = 2; alert(2)</script>",
    ' [bad](javascript:alert(3)) <a href="javascript:alert(4)">a</a>',
    ' <iframe src="https://example.com"></iframe>',
]


def test_markdown_is_rendered_and_html_is_inert(
    watched: Watched, gateway: ServerProcess, answer: list[str]
) -> None:
    answer[:] = INJECTION
    page = watched.open(gateway.url)
    page.add_init_script("window.addEventListener('securitypolicyviolation', () => {})")
    send(page, '<img src=x onerror="window.__pwned = 3"><b>not bold</b>')
    wait_done(page)
    messages = page.locator("#messages")
    for tag in ("img", "script", "iframe", "b"):
        assert messages.locator(tag).count() == 0, tag
    hrefs = [a.get_attribute("href") for a in messages.locator("a").all()]
    assert hrefs == ["https://example.com/a?b=1", "https://example.com/"]  # the 2nd: a bare URL
    content = page.locator(LAST_ANSWER).locator(".content")
    assert content.locator("h1").text_content() == "Title"
    assert content.locator("strong").text_content() == "bold"
    assert content.locator("em").text_content() == "em"
    assert content.locator("p code").first.text_content() == "x<y>"
    assert content.locator("ul li").all_text_contents() == ["one", "two"]
    assert content.locator("ol li").all_text_contents() == ["first", "second"]
    code = content.locator(".code-block code").text_content()
    assert code == "<script>window.__pwned = 'code'</script>"
    text = content.text_content() or ""
    assert '<img src=x onerror="window.__pwned = 1; alert(1)">' in text
    assert "<script>window.__pwned = 2; alert(2)</script>" in text
    assert "[bad](javascript:alert(3))" in text
    user = page.locator("#messages .message.user .content").text_content()
    assert user == '<img src=x onerror="window.__pwned = 3"><b>not bold</b>'
    time.sleep(0.3)  # an onerror handler would have run by now
    assert page.evaluate("window.__pwned") is None
    assert watched.dialogs == []
    assert not watched.errors
    assert not [line for line in watched.console if "Content Security Policy" in line]


def test_a_keyed_server_asks_for_the_key(watched: Watched, keyed_gateway: ServerProcess) -> None:
    page = watched.page
    page.goto(keyed_gateway.url)  # the page and its assets need no key
    dialog = page.locator("#key-dialog")
    dialog.wait_for(state="visible")
    assert "wants an API key" in (page.locator("#key-reason").text_content() or "")
    page.locator("#key-input").fill("sk-wrong")
    page.locator("#key-input").press("Enter")
    until(page, "document.querySelector('#key-reason').textContent.includes('refused')")
    page.locator("#key-input").fill(KEY)
    page.locator("#key-save").click()
    until(page, "document.querySelector('#model').options.length > 0")
    assert not dialog.is_visible()
    send(page, "hi with a key")
    wait_done(page)
    content = page.locator(LAST_ANSWER).locator(".content").text_content()
    assert content == "Hello from up w0 w1 w2 w3 w4"
    page.reload()  # the key is kept in the browser
    until(page, "document.querySelector('#model').options.length > 0")
    assert not dialog.is_visible()
    # without a key the JSON answer of / says what this is, not what it serves
    assert "models" not in httpx.get(keyed_gateway.url).json()


def test_status_view(watched: Watched, gateway: ServerProcess) -> None:
    page = watched.open(gateway.url)
    send(page, "count me")
    wait_done(page)
    page.locator("#show-status").click()
    table = page.locator("#status-deployments tbody")
    table.locator("tr").first.wait_for()
    rows = table.locator("tr").all_text_contents()
    assert any(MODEL in row and "up/upstream-model" in row and "healthy" in row for row in rows)
    assert page.locator("#status-models li").all_text_contents() == [MODEL, "second-model"]
    recent = page.locator("#status-recent tbody tr").first.text_content() or ""
    assert MODEL in recent
    assert "ok" in recent
    assert "server ok" in (page.locator("#status-summary").text_content() or "")
    page.locator("#show-chat").click()
    assert page.locator("#chat-view").is_visible()


def test_a_phone_sized_screen(watched: Watched, gateway: ServerProcess) -> None:
    page = watched.page
    page.set_viewport_size({"width": 390, "height": 800})
    watched.open(gateway.url)
    sidebar = page.locator("#sidebar")
    assert sidebar.bounding_box()["x"] + sidebar.bounding_box()["width"] <= 1  # off screen
    send(page, "hello from a phone")
    wait_done(page)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    page.locator("#open-sidebar").click()
    until(page, "document.querySelector('#sidebar').getBoundingClientRect().x >= 0")
    page.locator("#conversations li .open", has_text="hello from a phone").wait_for()
    page.locator("#new-chat").click()
    until(page, "document.querySelector('#sidebar').getBoundingClientRect().right <= 1")
    assert page.locator("#messages .message").count() == 0
    # keyboard: the focus is visible
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"


def test_screenshot(
    watched: Watched,
    gateway: ServerProcess,
    upstream: FakeUpstream,
    answer: list[str],
    tmp_path: Path,
) -> None:
    """A short conversation, for the README (written to docs/ with INTERFERENCE_SCREENSHOT=1)."""
    answer[:] = [
        "A GGUF file holds a model's **weights** and its metadata in one file, ",
        "so `llama.cpp` can load it directly:\n\n",
        "```python\nfrom openai import OpenAI\n\n",
        'client = OpenAI(base_url="http://127.0.0.1:1337/v1", api_key="none")\n```\n\n',
        "- tokenizer and chat template included\n- quantised: Q4, Q8, ...",
    ]
    upstream.faults.chunk_delay = 0.05
    page = watched.open(gateway.url)
    send(page, "What is a GGUF file?")
    wait_done(page)
    page.locator("#toggle-settings").click()
    page.locator("#system").fill("Answer briefly.")
    page.locator("#toggle-settings").click()
    target = SCREENSHOT if os.environ.get("INTERFERENCE_SCREENSHOT") else tmp_path / "page.png"
    target.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(target))
    assert target.stat().st_size > 10_000


def test_the_embedded_model_answers_in_the_page(
    watched: Watched, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The real server with the real embedded model (its shipped weights: nothing converted)."""
    server = start_server(
        tmp_path_factory.mktemp("local"),
        "providers:\n  local: {kind: local, parallel: 1, weights: shipped}\n",
    )
    try:
        page = watched.open(server.url)
        page.select_option("#model", "smollm2-135m-instruct")
        page.locator("#toggle-settings").click()
        page.locator("#max-tokens").fill("24")
        page.locator("#temperature").fill("0")
        send(page, "Say hello.")
        wait_done(page)
        last = page.locator(LAST_ANSWER)
        assert (last.locator(".content").text_content() or "").strip()
        meta = last.locator(".meta").text_content() or ""
        assert "via local/smollm2-135m-instruct" in meta, meta
        assert "tok/s" in meta
        assert not last.locator(".error").count()
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]
