"""``n`` choices from the engine as ``n`` requests of one choice each, run at once and merged.

llama.cpp answers ``n`` > 1 itself: one slot reads the prompt and ``n - 1`` child slots wait to
copy it. Some prompts leave the children waiting for ever, each holding its slot: a lone empty
assistant message with ``n: 2`` does (found by ``tests/e2e/test_fuzz_engine.py``), and a few
such requests wedge every slot of the model. One request per choice has no such shared state.
Choice ``j`` gets the seed ``seed + j`` (when the client gave one: the same seed would give
``n`` equal choices), its choices are renumbered as OpenAI numbers them (``prompt * n + j``
for a list of prompts), the prompt's tokens are counted once and the completions' summed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Any

#: llama.cpp reads seed 0xFFFFFFFF as "random": derived seeds stay below it
_SEEDS = 0xFFFFFFFF

Chunks = AsyncGenerator[dict[str, Any], None]


def one_choice_payloads(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``n`` one-choice requests of ``payload`` (just ``payload`` when ``n`` <= 1)."""
    n = int(payload.get("n") or 1)
    if n <= 1:
        return [payload]
    seed = payload.get("seed")
    out = []
    for j in range(n):
        single = {**payload, "n": 1}
        if seed is not None:
            single["seed"] = (seed + j) % _SEEDS
        out.append(single)
    return out


def _renumber(data: dict[str, Any], j: int, n: int) -> None:
    for choice in data.get("choices") or ():
        choice["index"] = int(choice.get("index", 0)) * n + j


def _summed_usage(usages: list[dict[str, Any]]) -> dict[str, Any]:
    usage = dict(usages[0])
    completion = sum(int(u.get("completion_tokens", 0)) for u in usages)
    usage["completion_tokens"] = completion
    usage["total_tokens"] = int(usage.get("prompt_tokens", 0)) + completion
    return usage


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One response from the responses of :func:`one_choice_payloads`, in order."""
    if len(results) == 1:
        return results[0]
    n = len(results)
    merged = dict(results[0])
    choices: list[dict[str, Any]] = []
    for j, result in enumerate(results):
        _renumber(result, j, n)
        choices.extend(result.get("choices") or ())
    merged["choices"] = sorted(choices, key=lambda choice: int(choice["index"]))
    usages = [r["usage"] for r in results if isinstance(r.get("usage"), dict)]
    if usages:
        merged["usage"] = _summed_usage(usages)
    return merged


async def merge_streams(
    payloads: list[dict[str, Any]], open_stream: Callable[[dict[str, Any]], Chunks]
) -> Chunks:
    """The chunks of the streams of ``payloads`` as they come, choices renumbered; the final
    usage chunk (``choices: []``) of each held back and sent once, summed, at the end."""
    if len(payloads) == 1:
        async for data in open_stream(payloads[0]):
            yield data
        return
    n = len(payloads)
    queue: asyncio.Queue[tuple[int, dict[str, Any] | BaseException | None]] = asyncio.Queue()
    streams = [open_stream(payload) for payload in payloads]

    async def pump(j: int, stream: Chunks) -> None:
        try:
            async for data in stream:
                await queue.put((j, data))
        except Exception as exc:
            await queue.put((j, exc))
        else:
            await queue.put((j, None))

    tasks = [asyncio.create_task(pump(j, stream)) for j, stream in enumerate(streams)]
    usage_chunks: list[dict[str, Any]] = []
    try:
        running = n
        while running:
            j, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            elif not item.get("choices") and isinstance(item.get("usage"), dict):
                usage_chunks.append(item)
            else:
                _renumber(item, j, n)
                yield item
        if usage_chunks:
            last = dict(usage_chunks[-1])
            last["usage"] = _summed_usage([chunk["usage"] for chunk in usage_chunks])
            yield last
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for stream in streams:
            await stream.aclose()
