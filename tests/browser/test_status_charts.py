"""The Status view's live charts (GET /v1/status/recent) in headless Chromium: requests per
second, time to first token, output tokens per second per model and failed upstream attempts
per deployment drawn from a real server's traffic, read again while the view is open and not
when it is closed or the tab hidden; the empty state of a quiet server; a key that may not read
the figures is told so."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import KEY, MODEL, Watched, gateway_config, open_key_dialog, until
from tests.support.server import ServerProcess, start_server
from tests.support.upstream import FakeUpstream

SCREENSHOT = Path(__file__).parents[2] / "docs" / "images" / "status-charts.png"
SECOND = "second-model"
DEPLOYMENT = "up/upstream-model"
MASTER = "sk-master-charts-9Zt4"
MASTER_CONFIG = """
server: {{master_key: {master}}}
storage: {{path: "{db}", refresh_s: 0.2}}
providers:
  up: {{kind: openai, base_url: "{url}/v1"}}
models:
  {model}:
    deployments: [{{provider: up, model: upstream-model}}]
openai_aliases: false
"""
#: the live charts' state: charts, empty, denied or error
STATE = "document.querySelector('#live').dataset.state"
#: the view reads the figures every 5 s
REFRESH_S = 5


def chat(server: ServerProcess, model: str = MODEL, key: str | None = None) -> int:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}
    answer = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=10)
    return answer.status_code


def stream(server: ServerProcess, model: str = MODEL) -> str:
    """A streamed chat completion, read to its end; its content."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=10) as answer:
        assert answer.status_code == 200
        return answer.read().decode()


def open_status(watched: Watched, server: ServerProcess) -> Any:
    page = watched.open(server.url)
    page.locator("#show-status").click()
    until(page, f"['charts', 'empty', 'denied', 'error'].includes({STATE})")
    return page


def legend(page: Any, chart: str) -> list[str]:
    return page.locator(f"#{chart} .legend .legend-name").all_text_contents()


def points(page: Any, chart: str, series: str) -> list[dict[str, float]]:
    """The dots of a series (those above zero) and the chart's zero line."""
    return page.evaluate(
        """([chart, series]) => {
            const svg = document.querySelector(`#${chart} svg.plot`);
            const zero = Number(svg.querySelector('line.axis').getAttribute('y1'));
            return [...svg.querySelectorAll('circle.point')]
                .filter((c) => c.dataset.series === series)
                .map((c) => ({cy: Number(c.getAttribute('cy')), zero,
                              title: c.querySelector('title').textContent}));
        }""",
        [chart, series],
    )


def line(page: Any, chart: str, series: str) -> str:
    path = page.locator(f'#{chart} svg.plot path.line[data-series="{series}"]')
    assert path.count() == 1, (chart, series)
    return path.get_attribute("d") or ""


def tab(page: Any, visibility: str) -> None:
    """Make the page believe its tab is ``hidden`` or ``visible`` again."""
    page.evaluate(
        """(visibility) => {
            const value = {value: visibility, configurable: true};
            Object.defineProperty(document, 'visibilityState', value);
            document.dispatchEvent(new Event('visibilitychange'));
        }""",
        visibility,
    )


def recent_requests(urls: list[str]) -> int:
    return sum(1 for url in urls if url.endswith("/v1/status/recent"))


def test_the_charts_draw_the_servers_traffic(
    watched: Watched, gateway: ServerProcess, upstream: FakeUpstream
) -> None:
    page = watched.page
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    upstream.faults.chunk_delay = 0.02  # the first token comes a little after the request
    for _ in range(4):
        assert chat(gateway) == 200
    assert chat(gateway, SECOND) == 200
    assert chat(gateway, SECOND) == 200
    for _ in range(3):
        assert "Hello from up" in stream(gateway)
    open_status(watched, gateway)
    assert page.locator("#live").get_attribute("data-state") == "charts"
    assert page.locator("#live-charts").is_visible()
    assert not page.locator("#live-empty").is_visible()
    summary = page.locator("#live-summary").text_content() or ""
    assert summary.startswith("9 requests · 0 answered with an error · 0 failed upstream"), summary

    # requests per second: one line per model, dots above the zero line
    assert legend(page, "live-requests") == [MODEL, SECOND]  # the busiest first
    assert line(page, "live-requests", MODEL).startswith("M")
    dots = points(page, "live-requests", MODEL)
    assert dots, "no dots for the model"
    assert all(d["cy"] < d["zero"] for d in dots)
    assert sum(float(d["title"].split(": ")[1].split()[0]) for d in dots) == pytest.approx(0.7)
    assert points(page, "live-requests", SECOND)
    assert page.locator("#live-requests text.axis-label").first.text_content() == "requests / s"
    times = page.locator("#live-requests text.time").all_text_contents()
    assert len(times) >= 3, times
    assert all(re.fullmatch(r"\d\d:\d\d", t) for t in times), times
    assert "max 0." in (page.locator("#live-requests .legend li").first.text_content() or "")

    # time to first token: p50 and p95 of the streamed requests' model, nothing for the other
    assert legend(page, "live-ttft") == [f"{MODEL} p50", f"{MODEL} p95", f"{SECOND} p50",
                                         f"{SECOND} p95"]  # fmt: skip
    for quantile in ("p50", "p95"):
        dots = points(page, "live-ttft", f"{MODEL} {quantile}")
        assert dots, quantile
        assert all(d["title"].endswith(" ms") for d in dots)
        assert all(float(d["title"].split(": ")[1].split()[0]) > 0 for d in dots)
    assert page.locator('#live-ttft path.line[data-series$="p95"]').first.get_attribute(
        "stroke-dasharray"
    )
    assert not points(page, "live-ttft", f"{SECOND} p50")  # no streams: no value, no line
    assert page.locator("#live-ttft text.axis-label").first.text_content() == "ms"

    # output tokens per second: the fake answers 6 tokens a request
    dots = points(page, "live-tokens", MODEL)
    assert sum(float(d["title"].split(": ")[1].split()[0]) for d in dots) == pytest.approx(4.2)
    assert page.locator("#live-tokens text.axis-label").first.text_content() == "tokens / s"

    # no failed attempt yet: said, not drawn
    errors = page.locator("#live-errors")
    assert errors.get_attribute("data-state") == "empty"
    assert errors.locator("svg.plot").count() == 0
    assert "No failed upstream attempts" in (errors.locator(".chart-empty").text_content() or "")

    # failures upstream show at the next reading, while the view stays open
    upstream.faults.status = 500
    assert chat(gateway) == 502
    assert chat(gateway) == 502
    upstream.faults.status = None
    until(page, "document.querySelector('#live-errors').dataset.state === 'drawn'", REFRESH_S + 5)
    assert legend(page, "live-errors") == [DEPLOYMENT]
    failed = points(page, "live-errors", DEPLOYMENT)
    assert sum(float(d["title"].split(": ")[1].split()[0]) for d in failed) >= 2
    assert page.locator("#live-errors text.axis-label").first.text_content() == (
        "failed attempts / 10 s"
    )
    summary = page.locator("#live-summary").text_content() or ""
    assert summary.startswith("11 requests · 2 answered with an error"), summary

    # readable in the dark theme: the labels follow the page's colours
    light = page.evaluate("getComputedStyle(document.querySelector('#live-ttft .tick')).fill")
    page.emulate_media(color_scheme="dark")
    dark = page.evaluate("getComputedStyle(document.querySelector('#live-ttft .tick')).fill")
    assert light != dark
    page.emulate_media(color_scheme="light")

    # no reading while the view is closed, nor while the tab is hidden
    page.locator("#show-chat").click()
    time.sleep(0.3)  # a reading that had just begun is counted
    before = recent_requests(urls)
    time.sleep(REFRESH_S + 0.8)
    assert recent_requests(urls) == before
    page.locator("#show-status").click()
    time.sleep(0.5)
    assert recent_requests(urls) == before + 1  # at once when shown again
    tab(page, "hidden")
    time.sleep(REFRESH_S + 0.8)
    assert recent_requests(urls) == before + 1
    tab(page, "visible")
    time.sleep(0.5)
    assert recent_requests(urls) == before + 2

    # the rest of the view is still there
    assert page.locator("#status-models li").all_text_contents() == [MODEL, SECOND]
    assert "server ok" in (page.locator("#status-summary").text_content() or "")
    assert not watched.errors, watched.errors


def test_a_quiet_server_says_it_has_nothing_to_draw(
    watched: Watched, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = start_server(tmp_path_factory.mktemp("quiet"), gateway_config(upstream))
    try:
        page = open_status(watched, server)
        assert page.locator("#live").get_attribute("data-state") == "empty"
        empty = page.locator("#live-empty")
        assert empty.is_visible()
        assert empty.text_content() == "No requests in the last 15 minutes."
        assert not page.locator("#live-charts").is_visible()
        assert page.locator("#live svg.plot").count() == 0
        assert not page.locator("#live-denied").is_visible()
        assert "updated" in (page.locator("#live-summary").text_content() or "")
        # the rest of the view works
        page.locator("#status-deployments tbody tr").first.wait_for()
        assert not watched.errors, watched.errors
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def master_gateway(
    upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("master")
    config = MASTER_CONFIG.format(
        master=MASTER, db=folder / "keys.db", url=upstream.url, model=MODEL
    )
    running = start_server(folder, config)
    yield running
    assert running.stop() == 0, running.log.read_text()[-3000:]


def give_key(page: Any, key: str) -> None:
    open_key_dialog(page)
    page.locator("#key-input").fill(key)
    page.locator("#key-save").click()
    until(page, "document.querySelector('#model').options.length > 0")


def test_a_virtual_key_is_told_the_charts_need_the_master_key(
    watched: Watched, master_gateway: ServerProcess
) -> None:
    made = httpx.post(
        f"{master_gateway.url}/key/generate",
        json={"key_alias": "viewer"},
        headers={"authorization": f"Bearer {MASTER}"},
    )
    virtual = made.json()["key"]
    assert chat(master_gateway, key=virtual) == 200
    page = watched.page
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.goto(master_gateway.url)
    give_key(page, virtual)
    page.locator("#show-status").click()
    until(page, f"{STATE} === 'denied'")
    denied = page.locator("#live-denied")
    assert denied.is_visible()
    assert "master key" in (denied.text_content() or "")
    assert not page.locator("#live-charts").is_visible()
    assert page.locator("#live svg.plot").count() == 0

    give_key(page, MASTER)  # the next reading uses the new key
    until(page, f"{STATE} === 'charts'", REFRESH_S + 5)
    assert not denied.is_visible()
    assert legend(page, "live-requests") == [MODEL]
    assert not watched.errors, watched.errors
    assert not [u for u in urls if MASTER in u or virtual in u]  # keys never travel in URLs


def test_a_configured_key_may_read_the_charts(
    watched: Watched, keyed_gateway: ServerProcess
) -> None:
    assert chat(keyed_gateway, key=KEY) == 200
    page = watched.page
    page.goto(keyed_gateway.url)
    give_key(page, KEY)
    page.locator("#show-status").click()
    until(page, f"{STATE} === 'charts'")
    assert points(page, "live-requests", MODEL)
    assert not watched.errors, watched.errors


def traffic(server: ServerProcess, upstream: FakeUpstream, seconds: float) -> None:
    """Requests of two models at a changing pace, some streamed more slowly, and a stretch
    when the upstream fails: for the screenshot of the docs."""
    end = time.monotonic() + seconds
    tick = 0

    def one(model: str, streamed: bool) -> None:
        try:
            if streamed:
                stream(server, model)
            else:
                chat(server, model)
        except (AssertionError, httpx.HTTPError):
            pass  # the failing stretch

    while time.monotonic() < end:
        phase = tick % 12
        upstream.faults.status = 500 if tick in (9, 10) else None
        upstream.faults.chunk_delay = 0.01 + 0.015 * (phase % 4)
        busy = 2 + (phase % 5)
        workers = [threading.Thread(target=one, args=(MODEL, i % 2 == 0)) for i in range(busy)] + [
            threading.Thread(target=one, args=(SECOND, i == 0)) for i in range(1 + phase % 3)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        tick += 1
        time.sleep(max(0.0, 1.0 - 0.05 * busy))
    upstream.faults.status = None


def test_screenshot(
    watched: Watched, gateway: ServerProcess, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """The live charts with data, for the docs (written to docs/images/ with
    INTERFERENCE_SCREENSHOT=1, after two minutes of traffic; else a few seconds')."""
    real = bool(os.environ.get("INTERFERENCE_SCREENSHOT"))
    traffic(gateway, upstream, 120 if real else 2)
    page = watched.page
    page.set_viewport_size({"width": 1280, "height": 1000})
    open_status(watched, gateway)
    until(page, f"{STATE} === 'charts'")
    target = SCREENSHOT if real else tmp_path / "status-charts.png"
    target.parent.mkdir(exist_ok=True)
    box = page.locator("#live").bounding_box()
    margin = 12
    clip = {
        "x": box["x"] - margin,
        "y": box["y"] - margin,
        "width": box["width"] + 2 * margin,
        "height": box["height"] + 2 * margin,
    }
    page.screenshot(path=str(target), clip=clip)
    assert target.stat().st_size > 10_000
    assert not watched.errors, watched.errors
