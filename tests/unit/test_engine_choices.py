"""``n`` choices as ``n`` one-choice engine requests: payloads, merged answers and streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from interference.engine.choices import merge_results, merge_streams, one_choice_payloads


def test_one_choice_payloads_derive_distinct_seeds() -> None:
    assert one_choice_payloads({"n": 1, "seed": 5}) == [{"n": 1, "seed": 5}]
    assert one_choice_payloads({"prompt": "x"}) == [{"prompt": "x"}]
    payloads = one_choice_payloads({"n": 3, "seed": 0xFFFFFFFE, "prompt": "x"})
    assert [p["n"] for p in payloads] == [1, 1, 1]
    assert [p["seed"] for p in payloads] == [0xFFFFFFFE, 0, 1]  # never 0xFFFFFFFF: "random"
    assert all("seed" not in p for p in one_choice_payloads({"n": 2}))


def answer(text: str, completion_tokens: int, prompts: int = 1) -> dict[str, Any]:
    return {
        "id": "x",
        "choices": [{"index": p, "text": f"{text}{p}"} for p in range(prompts)],
        "usage": {"prompt_tokens": 7, "completion_tokens": completion_tokens, "total_tokens": 0},
    }


def test_merged_results_number_choices_as_openai_does() -> None:
    merged = merge_results([answer("a", 3, prompts=2), answer("b", 4, prompts=2)])
    assert [(c["index"], c["text"]) for c in merged["choices"]] == [
        (0, "a0"),
        (1, "b0"),
        (2, "a1"),
        (3, "b1"),
    ]
    assert merged["usage"] == {"prompt_tokens": 7, "completion_tokens": 7, "total_tokens": 14}
    single = answer("c", 1)
    assert merge_results([single]) is single


def chunk(index: int, text: str) -> dict[str, Any]:
    return {"choices": [{"index": index, "delta": {"content": text}}]}


def usage_chunk(tokens: int) -> dict[str, Any]:
    return {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": tokens}}


def run(payloads: list[dict[str, Any]], streams: dict[int, list[Any]]) -> list[dict[str, Any]]:
    closed: list[int] = []

    async def open_stream(payload: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        try:
            for item in streams[payload["seed"]]:
                await asyncio.sleep(0)
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            closed.append(payload["seed"])

    async def collect() -> list[dict[str, Any]]:
        return [data async for data in merge_streams(payloads, open_stream)]

    try:
        return asyncio.run(collect())
    finally:
        assert sorted(closed) == sorted(p["seed"] for p in payloads)  # every stream closed


def test_merged_streams_renumber_and_sum_the_usage_once_at_the_end() -> None:
    payloads = one_choice_payloads({"n": 2, "seed": 10})
    out = run(
        payloads,
        {10: [chunk(0, "a"), chunk(0, "b"), usage_chunk(2)], 11: [chunk(0, "c"), usage_chunk(5)]},
    )
    texts = [(c["choices"][0]["index"], c["choices"][0]["delta"]["content"]) for c in out[:-1]]
    assert sorted(texts) == [(0, "a"), (0, "b"), (1, "c")]
    assert [t for t in texts if t[0] == 0] == [(0, "a"), (0, "b")]  # each choice in order
    assert out[-1] == {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 7,
                                                "total_tokens": 9}}  # fmt: skip


def test_a_failing_stream_fails_the_merge_and_closes_the_others() -> None:
    payloads = one_choice_payloads({"n": 2, "seed": 1})
    with pytest.raises(RuntimeError, match="slot lost"):
        run(payloads, {1: [chunk(0, "a"), RuntimeError("slot lost")], 2: [chunk(0, "b")] * 50})
