"""Speed and output quality of the default model in other weight formats.

The shipped Q4_1 GGUF is converted with ``interference.engine.weights`` (what the ``weights``
setting of a local model does) into Q8_0 and Q4_0. Each file is loaded in-process and measured:

* **speed** -- prompt processing tokens/s (a ~1,100-token prompt, no cache, best of 3), and
  decoding tokens/s of one stream and the aggregate of 8 concurrent streams (``--tokens`` each,
  end-of-text banned);
* **fidelity to Q4_1** -- teacher forcing over hand-written chat answers (``ANSWERS``): at every
  answer position the model's top-20 next-token log-probabilities are read (one-token
  completions on the exact token prefix, temperature 0). ``top1=Q4_1`` is the share of positions
  whose most likely token is Q4_1's; ``KL`` is the mean KL(Q4_1 || format) over Q4_1's top 20
  tokens (a token missing from the format's top 20 gets its 20th log-probability, so the figure
  is a slight underestimate);
* **quality** -- ``next-token acc``: the share of answer positions where the model's most likely
  token is the text's actual next token; and the behaviour of sampled answers with the model's
  sampling defaults (``bench/sampling_defaults.py``'s prompts and scoring, ``--seeds`` seeds):
  stop rate, looped rate, distinct word trigrams.

    .venv/bin/python bench/weight_formats.py [--tokens 128] [--seeds 10] [--json out.json]

Timings only mean something on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from interference.engine import EngineSettings, LlamaEngine, resolve_model
from interference.engine.weights import convert
from sampling_defaults import PROMPTS, Candidate, Result, run_candidate

TOP = 20
QUESTIONS_AND_ANSWERS = (
    (
        "Why is the sky blue?",
        "Sunlight contains every colour. When it passes through the air, the short blue "
        "wavelengths are scattered by gas molecules much more than the long red ones, so blue "
        "light reaches our eyes from every part of the sky.",
    ),
    (
        "Give me three tips for sleeping better.",
        "1. Go to bed and get up at the same time every day.\n2. Keep your bedroom dark, quiet "
        "and cool.\n3. Avoid coffee and screens in the hour before you sleep.",
    ),
    (
        "Write a Python function that returns the square of a number.",
        "Here is a simple function:\n\n```python\ndef square(x):\n    return x * x\n```\n\n"
        "For example, `square(4)` returns 16.",
    ),
    (
        "Tell me a very short story about a cat.",
        "Once upon a time, a small grey cat lived in a busy city. Every morning she sat on the "
        "window and watched the birds. One day a bird landed next to her, and they became "
        "friends.",
    ),
    (
        "What is the capital of Japan?",
        "The capital of Japan is Tokyo. It is the largest city in the country and one of the "
        "most populated cities in the world.",
    ),
    (
        "How do plants make food?",
        "Plants make their food through photosynthesis. Their leaves take in sunlight, water "
        "from the roots and carbon dioxide from the air, and turn them into sugar and oxygen.",
    ),
)


async def stream_tokens(engine: LlamaEngine, prompt: str, tokens: int) -> int:
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "logit_bias": {"2": -100},
        "seed": 1,
        "stream_options": {"include_usage": True},
    }
    count = 0
    async for chunk in engine.stream_chat(body):
        if chunk.get("usage"):
            count = chunk["usage"]["completion_tokens"]
    return count


async def tokenize(engine: LlamaEngine, text: str) -> list[int]:
    """Token ids from the engine's own tokenizer (its internal listener's /tokenize)."""
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.post(
            f"{engine.internal_url}/tokenize",
            json={"content": text, "parse_special": True},
            headers={"authorization": f"Bearer {engine._internal_key}"},
        )
    return [int(t) for t in response.json()["tokens"]]


Position = tuple[int, dict[int, float]]  # (actual next token, top-20 logprobs by token id)


async def teacher_forced(engine: LlamaEngine) -> list[Position]:
    """Every answer position: the text's next token and the model's top-20 log-probabilities."""
    semaphore = asyncio.Semaphore(8)

    async def at(prefix: list[int], actual: int) -> Position:
        body = {"prompt": prefix, "max_tokens": 1, "temperature": 0, "logprobs": TOP}
        async with semaphore:
            data = await engine.complete_text(body)
        top = data["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        return actual, {int(t["id"]): float(t["logprob"]) for t in top}

    jobs = []
    for question, answer in QUESTIONS_AND_ANSWERS:
        head = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        prompt = await tokenize(engine, head)
        full = await tokenize(engine, head + answer)
        jobs += [at(full[:i], full[i]) for i in range(len(prompt), len(full))]
    return list(await asyncio.gather(*jobs))


def fidelity(reference: list[Position], other: list[Position]) -> dict[str, float]:
    same = kl = accurate = 0.0
    for (actual, ref), (_, top) in zip(reference, other, strict=True):
        same += max(ref, key=ref.__getitem__) == max(top, key=top.__getitem__)
        accurate += max(top, key=top.__getitem__) == actual
        floor = min(top.values())
        kl += sum(math.exp(lp) * (lp - top.get(t, floor)) for t, lp in ref.items())
    n = len(reference)
    return {"top1_same": same / n, "kl": kl / n, "next_token_acc": accurate / n}


async def measure(path: Path, tokens: int, seeds: int) -> dict[str, Any]:
    engine = LlamaEngine(EngineSettings(path=path, parallel=8, context=16384, embeddings=False))
    await engine.start()
    try:
        await stream_tokens(engine, "Hi", 8)  # warm-up
        text = Path(__file__).with_name("README.md").read_text()[:3000]
        prefill = 0.0
        for i in range(3):
            body = {"prompt": f"{i} {text}", "max_tokens": 1, "cache_prompt": False}
            data = await engine.complete_text(body)
            prefill = max(prefill, float(data["timings"]["prompt_per_second"]))
        started = time.perf_counter()
        single = await stream_tokens(engine, PROMPTS[0], tokens) / (time.perf_counter() - started)
        started = time.perf_counter()
        counts = await asyncio.gather(
            *(stream_tokens(engine, PROMPTS[i % 4], tokens) for i in range(8))
        )
        aggregate = sum(counts) / (time.perf_counter() - started)
        positions = await teacher_forced(engine)
        defaults = Candidate(
            "defaults", dict(resolve_model("smollm2-135m-instruct").sampling.values())
        )
        behaviour: Result = await run_candidate(engine, defaults, PROMPTS, seeds, 400)
    finally:
        engine.close()
    return {
        "prefill": prefill,
        "single": single,
        "aggregate": aggregate,
        "positions": positions,
        "stop": behaviour.stop_rate,
        "looped": behaviour.looped_rate,
        "distinct3": behaviour.distinct3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="weights-"))
    source = resolve_model("smollm2-135m-instruct").path
    files = {"Q4_1 (shipped)": source}
    for fmt in ("q8_0", "q4_0"):
        target = out / f"{source.stem}.{fmt}.gguf"
        started = time.perf_counter()
        convert(source, target, fmt)
        print(f"{fmt}: converted in {time.perf_counter() - started:.1f} s", flush=True)
        files[fmt.upper()] = target
    results = {}
    for name, path in files.items():
        results[name] = asyncio.run(measure(path, args.tokens, args.seeds))
        print(f"{name}: measured", flush=True)
    reference = results["Q4_1 (shipped)"]["positions"]
    print(
        f"\n{len(reference)} teacher-forced positions; {len(PROMPTS) * args.seeds} sampled answers"
    )
    print(
        f"{'format':<16}{'prompt':>7}{'1 stream':>9}{'8 streams':>10}{'8/1':>6}"
        f"{'top1=Q4_1':>10}{'KL':>8}"
        f"{'next-tok acc':>13}{'stop':>7}{'looped':>8}{'distinct3':>10}"
    )
    report = {}
    for name, r in results.items():
        f = fidelity(reference, r["positions"])
        report[name] = {k: v for k, v in r.items() if k != "positions"} | f
        print(
            f"{name:<16}{r['prefill']:>7.0f}{r['single']:>9.1f}{r['aggregate']:>10.1f}"
            f"{r['aggregate'] / r['single']:>6.2f}{f['top1_same']:>10.1%}{f['kl']:>8.4f}"
            f"{f['next_token_acc']:>13.1%}{r['stop']:>7.1%}{r['looped']:>8.1%}"
            f"{r['distinct3']:>10.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
