"""``GET /metrics`` of a server running the real local model: the engine's own figures (llama.cpp's
slots, queue, prompt cache, generated tokens) next to the gateway's, and time to first token
measured on the local model's streams."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_the_local_engine_s_figures_are_in_the_scrape(http: httpx.Client) -> None:
    before = samples(http.get("/metrics").text)
    ask = {"model": "gpt-4o-mini", "max_tokens": 8, "temperature": 0,
           "messages": [{"role": "user", "content": "Say one word."}]}  # fmt: skip
    for stream in (False, True):
        answer = http.post("/v1/chat/completions", json={**ask, "stream": stream})
        assert answer.status_code == 200
    after = samples(http.get("/metrics").text)

    def total(found: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str) -> float:
        return sum(found.get(name, {}).values())

    generated = total(after, "interference_local_generated_tokens_total")
    assert generated - total(before, "interference_local_generated_tokens_total") >= 2
    assert "interference_local_slots_busy" in after
    assert "interference_requests_queued" in after
    assert total(after, "interference_local_prompt_tokens_total") > 0
    # the gateway's own figures for the same requests, labelled with the local provider
    outputs = {k: v for k, v in after["interference_tokens_total"].items()
               if ("type", "output") in k and ("provider", "local") in k}  # fmt: skip
    assert sum(outputs.values()) >= 2
    ttft = after["interference_time_to_first_token_seconds_count"]
    assert sum(v for k, v in ttft.items() if ("provider", "local") in k) >= 1
