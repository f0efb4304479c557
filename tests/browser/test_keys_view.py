"""The web chat's Keys & usage view in headless Chromium, against a server with a master key:
offered to the master key only; keys created (shown once), blocked, unblocked and revoked; the
usage of a key drawn per day and summed, by key and by model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser.conftest import MODEL, Watched, open_key_dialog, until
from tests.support.server import ServerProcess, start_server
from tests.support.upstream import FakeUpstream

MASTER = "sk-master-browser-K3y5"
CONFIG = """
server: {{master_key: {master}}}
storage: {{path: "{db}", refresh_s: 0.2}}
providers:
  up: {{kind: openai, base_url: "{url}/v1"}}
models:
  {model}:
    deployments: [{{provider: up, model: upstream-model}}]
  second-model:
    deployments: [{{provider: up, model: upstream-model}}]
prices:
  upstream-model: {{input: 100, output: 200}}
openai_aliases: false
"""
ADMIN = {"authorization": f"Bearer {MASTER}"}
#: the fake answers 3 prompt and 6 completion tokens: 3 * 100 / 1e6 + 6 * 200 / 1e6 USD
COST = 0.0015
ROW = "#keys-table tbody tr"


@pytest.fixture(scope="module")
def master_gateway(
    upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("master")
    config = CONFIG.format(master=MASTER, db=folder / "keys.db", url=upstream.url, model=MODEL)
    running = start_server(folder, config)
    yield running
    assert running.stop() == 0, running.log.read_text()[-3000:]


def listed(server: ServerProcess) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{server.url}/key/list",
        params={"return_full_object": "true", "size": 100},
        headers=ADMIN,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["keys"]


def chat(server: ServerProcess, key: str, model: str = MODEL) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16},
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )


def enter_key(page: Any, key: str) -> int:
    """Give the page a key through its dialog and wait until it asked whether it is the
    master key (GET /key/list)."""
    open_key_dialog(page)
    page.locator("#key-input").fill(key)
    sent = f"Bearer {key}"
    with page.expect_response(
        lambda r: "/key/list" in r.url and r.request.headers.get("authorization") == sent
    ) as probe:
        page.locator("#key-save").click()
    until(page, "document.querySelector('#model').options.length > 0")
    return probe.value.status


def row_of(page: Any, alias: str) -> Any:
    return page.locator(ROW, has_text=alias)


def totals(page: Any) -> dict[str, list[str]]:
    """The usage totals table: its first column -> the other cells."""
    rows = page.locator("#usage-totals tbody tr").all()
    out = {}
    for row in rows:
        cells = [c.text_content() or "" for c in row.locator("th, td").all()]
        out[cells[0]] = cells[1:]
    return out


def test_the_master_key_administers_keys_and_sees_their_usage(
    watched: Watched, master_gateway: ServerProcess
) -> None:
    page = watched.page
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(master_gateway.url)
    page.locator("#key-dialog").wait_for(state="visible")  # every route needs a key
    assert not page.locator("#show-keys").is_visible()
    assert enter_key(page, MASTER) == 200
    page.locator("#show-keys").click()
    assert page.locator("#keys-view").is_visible()
    assert not page.locator("#chat-view").is_visible()
    assert page.locator("#show-keys").get_attribute("aria-pressed") == "true"

    # create a key: shown once, with a copy button
    page.locator("#key-create-box summary").click()
    page.get_by_label("Alias").fill("ci-bot")
    page.get_by_label("Models").fill(f"{MODEL}, second-model")
    page.get_by_label("Max budget (USD)").fill("50")
    page.get_by_label("Budget duration").fill("30d")
    page.get_by_label("Expires after").fill("7d")
    page.get_by_label("Requests / minute").fill("100")
    page.get_by_label("Tokens / minute").fill("100000")
    page.get_by_label("Max parallel").fill("4")
    page.locator("#key-create-submit").click()
    page.locator("#key-created").wait_for(state="visible")
    key = page.locator("#key-created-value").text_content() or ""
    assert key.startswith("sk-"), key
    assert "ci-bot" in (page.locator("#key-created").text_content() or "")
    page.locator("#key-created-copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == key
    created = {k["key_alias"]: k for k in listed(master_gateway)}["ci-bot"]
    assert created["models"] == [MODEL, "second-model"]
    assert (created["max_budget"], created["budget_duration"]) == (50, "30d")
    assert (created["rpm_limit"], created["tpm_limit"], created["max_parallel_requests"]) == (
        100,
        100000,
        4,
    )
    assert created["expires"] is not None
    row = row_of(page, "ci-bot")
    row.wait_for()
    cells = row.locator("td").all_text_contents()
    assert cells[1] == f"{MODEL}, second-model"
    assert cells[2] == "$0 of $50.00 per 30d"
    assert cells[3] == "100 · 100000 · 4"
    assert cells[5] == "active"
    assert cells[6] == "never"
    page.locator("#key-created-done").click()
    assert not page.locator("#key-created").is_visible()
    assert page.locator("#key-created-value").text_content() == ""  # shown once

    # the key's requests, drawn by key and by model
    assert chat(master_gateway, key).status_code == 200
    assert chat(master_gateway, key).status_code == 200
    assert chat(master_gateway, key, "second-model").status_code == 200
    page.locator("#usage-refresh").click()
    until(page, "document.querySelector('#usage-totals tbody').textContent.includes('ci-bot')")
    assert totals(page) == {"ci-bot": ["3", "0", "9", "18", f"${3 * COST:.4f}".rstrip("0")]}
    tfoot = page.locator("#usage-totals tfoot tr").text_content() or ""
    assert tfoot.startswith("total3")
    assert "3 requests" in (page.locator("#usage-summary").text_content() or "")
    for chart in ("#chart-spend", "#chart-tokens"):
        bars = page.locator(f"{chart} svg rect.bar")
        assert bars.count() == 1  # one day, one key
        assert float(bars.first.get_attribute("height") or 0) > 100
        assert page.locator(f"{chart} .legend li").all_text_contents()[0].startswith("ci-bot")
        assert page.locator(f"{chart} svg text.axis-label").count() == 2
    assert page.locator("#chart-tokens .legend li").text_content() == "ci-bot 27"
    page.locator("#usage-by-model").click()
    assert page.locator("#usage-by-model").get_attribute("aria-pressed") == "true"
    assert page.locator("#usage-group-head").text_content() == "model"
    assert {name: cells[0] for name, cells in totals(page).items()} == {
        MODEL: "2",
        "second-model": "1",
    }
    legend = page.locator("#chart-spend .legend .legend-name").all_text_contents()
    assert legend == [MODEL, "second-model"]
    assert page.locator("#chart-spend svg rect.bar").count() == 2  # stacked: one part each
    fills = {bar.get_attribute("fill") for bar in page.locator("#chart-spend rect.bar").all()}
    assert len(fills) == 2
    page.locator("#usage-by-key").click()

    # the spend shows in the list once the keys are read again
    page.locator("#show-chat").click()
    page.locator("#show-keys").click()
    until(page, "!document.querySelector('#keys-table tbody').textContent.includes('$0 of')")
    spend = row_of(page, "ci-bot").locator("td").nth(2).text_content() or ""
    assert spend.startswith("$0.00"), spend
    assert spend.endswith(" of $50.00 per 30d"), spend
    assert row_of(page, "ci-bot").locator("td").nth(6).text_content() != "never"

    # block, unblock
    page.get_by_role("button", name="Block ci-bot").click()
    until(page, f"document.querySelector('{ROW}').textContent.includes('blocked')")
    assert row_of(page, "ci-bot").locator("td.key-status").text_content() == "blocked"
    refused = chat(master_gateway, key)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "key_blocked"
    page.get_by_role("button", name="Unblock ci-bot").click()
    until(page, f"document.querySelector('{ROW} td.key-status').textContent === 'active'")
    assert chat(master_gateway, key).status_code == 200

    # revoke: a second click confirms
    revoke = page.get_by_role("button", name="Revoke ci-bot")
    revoke.click()
    assert row_of(page, "ci-bot").count() == 1
    confirm = row_of(page, "ci-bot").locator("button.confirm")
    assert confirm.text_content() == "Revoke for good?"
    confirm.click()
    until(page, f"document.querySelectorAll('{ROW}').length === 0")
    assert page.locator("#keys-empty").is_visible()
    assert "ci-bot" not in {k["key_alias"] for k in listed(master_gateway)}
    assert chat(master_gateway, key).status_code == 401
    # its usage stays, under a short digest
    page.locator("#usage-refresh").click()
    until(page, "document.querySelector('#usage-totals tbody').textContent.includes('…')")
    (name, cells), *_ = totals(page).items()
    assert name.endswith("…")
    assert len(name) == 13
    assert cells[0] == "4"

    assert not watched.errors, watched.errors
    assert not [u for u in urls if MASTER in u or key in u]  # keys never travel in URLs
    assert not [line for line in watched.console if MASTER in line or key in line]


def test_api_errors_are_shown_in_the_view(watched: Watched, master_gateway: ServerProcess) -> None:
    page = watched.page
    page.goto(master_gateway.url)
    enter_key(page, MASTER)
    page.locator("#show-keys").click()
    page.locator("#key-create-box summary").click()
    page.get_by_label("Expires after").fill("soon")
    page.locator("#key-create-submit").click()
    error = page.locator("#keys-error")
    error.wait_for(state="visible")
    text = error.text_content() or ""
    assert text.startswith("The key was not created: 400"), text
    assert "`soon` is not a duration" in text, text
    assert not page.locator("#key-created").is_visible()
    page.get_by_label("Expires after").fill("")
    page.get_by_label("Requests / minute").fill("0")
    with page.expect_request(lambda r: "/key/generate" in r.url, timeout=1000) as sent:
        page.locator("#key-create-submit").click()
        page.get_by_label("Requests / minute").fill("2")
        page.locator("#key-create-submit").click()
    assert sent.value.post_data_json == {"rpm_limit": 2}  # the browser refused 0 before
    page.locator("#key-created").wait_for(state="visible")
    assert not page.locator("#keys-error").is_visible()
    # an empty range is said, not drawn
    page.locator("#usage-start").fill("2001-01-01")
    page.locator("#usage-end").fill("2001-01-02")
    page.locator("#usage-refresh").click()
    until(page, "document.querySelector('#usage-summary').textContent.includes('2001-01-01')")
    assert "0 requests" in (page.locator("#usage-summary").text_content() or "")
    assert page.locator("#chart-spend svg").count() == 0
    assert page.locator("#chart-spend .chart-empty").is_visible()
    assert not watched.errors, watched.errors


def test_other_keys_are_not_offered_the_view(
    watched: Watched, master_gateway: ServerProcess
) -> None:
    made = httpx.post(
        f"{master_gateway.url}/key/generate", json={"key_alias": "someone"}, headers=ADMIN
    )
    virtual = made.json()["key"]
    page = watched.page
    page.goto(master_gateway.url)
    assert enter_key(page, virtual) == 403  # it works for the chat, not for the keys
    assert page.locator("#model option").count() == 2
    assert not page.locator("#show-keys").is_visible()
    assert not page.locator("#keys-view").is_visible()

    assert enter_key(page, MASTER) == 200
    page.locator("#show-keys").click()
    row_of(page, "someone").wait_for()
    assert enter_key(page, virtual) == 403  # the key changed while the view was open
    until(page, "document.querySelector('#show-keys').hidden")
    assert page.locator("#keys-denied").is_visible()
    assert "master key" in (page.locator("#keys-denied").text_content() or "")
    assert not page.locator("#keys-admin").is_visible()
    assert page.locator(ROW).count() == 0  # what the master key saw is gone
    assert not watched.errors, watched.errors


def test_no_view_without_a_master_key(watched: Watched, gateway: ServerProcess) -> None:
    page = watched.page
    with page.expect_response(lambda r: "/key/list" in r.url) as probe:
        watched.open(gateway.url)
    assert probe.value.status == 404  # virtual keys are off
    assert not page.locator("#show-keys").is_visible()
