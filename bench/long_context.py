"""Long prompts on the embedded model: answers past its trained context, with and without YaRN.

SmolLM2-135M was trained on 8,192 positions; the default context is 32,768 so that the first
request of a coding agent fits (Claude Code's is about 28k of its tokens). Positions past the
trained length need rope scaling (YaRN here, ``rope_scaling``), which also changes positions
inside it. For each layout (a local provider's settings as YAML, in a fresh ``interference
serve``) the script measures:

- *QA*: short factual questions answered greedily (``temperature: 0``), a hit when the answer
  holds the expected word: what scaling costs a short chat;
- *passkey*: a five-digit key hidden at a depth of filler text of a given length, asked back
  as a text completion; a hit when the answer holds the key. The time to the answer is about
  the time to read the prompt;
- RSS of the server after the runs;
- with ``--after-long``: one stream's tokens/s and first token before and after a long prompt
  is held in the shared context (its cached cells widen every later request's attention).

    .venv/bin/python bench/long_context.py [--lengths 2000,6000,12000,24000] \\
        [--depths 0.1,0.5,0.9] [--layout "{context: 8192}" ...] [--after-long] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from engine import interference_process
from engine_layouts import rss_mb

DEFAULT_LAYOUTS = [
    # the trained length, unscaled (a larger context without scaling is no different for one
    # request: llama.cpp holds each to the trained length)
    "{context: 8192}",
    "{}",  # the default: 32768 tokens, YaRN x4
]

QUESTIONS = [
    ("What is the capital of France?", "paris"),
    ("What is the capital of Japan?", "tokyo"),
    ("What is the capital of Italy?", "rome"),
    ("What is the capital of Germany?", "berlin"),
    ("What is the capital of Spain?", "madrid"),
    ("What is the largest planet in our solar system?", "jupiter"),
    ("Which planet is known as the Red Planet?", "mars"),
    ("What gas do plants absorb from the air?", "carbon dioxide"),
    ("What is the chemical symbol for water?", "h2o"),
    ("How many days are in a week?", "seven|7"),
    ("How many legs does a spider have?", "eight|8"),
    ("What is the opposite of hot?", "cold"),
    ("What color is the sky on a clear day?", "blue"),
    ("Who wrote Romeo and Juliet?", "shakespeare"),
    ("What is the freezing point of water in Celsius?", "0|zero"),
    ("What is 2 plus 2?", "4|four"),
    ("What animal is known as the king of the jungle?", "lion"),
    ("What is the largest ocean on Earth?", "pacific"),
    ("What language is spoken in Brazil?", "portuguese"),
    ("What do bees make?", "honey"),
]

FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
)


@dataclass
class Passkey:
    length: int  # filler tokens asked for (about)
    depth: float  # where the key is, from the start (0) to the end (1)
    prompt_tokens: int
    found: bool
    seconds: float
    answer: str


@dataclass
class LayoutFigures:
    layout: str
    qa_hits: int
    qa_total: int
    passkeys: list[Passkey] = field(default_factory=list)
    rss_mb: float = 0.0
    before_long: tuple[float, float] | None = None  # (tokens/s, first token ms)
    after_long: tuple[float, float] | None = None


def ask(client: httpx.Client, url: str, content: str, max_tokens: int) -> dict[str, object]:
    body = {
        "model": "gpt-4",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    response = client.post(f"{url}/v1/chat/completions", json=body)
    data: dict[str, object] = response.json()
    if response.status_code != 200:
        return {"error": data, "usage": {"prompt_tokens": 0}, "choices": [{"message": {}}]}
    return data


def answer_of(data: dict[str, object]) -> str:
    choices = data["choices"]
    assert isinstance(choices, list)
    return str(choices[0]["message"].get("content") or "")


def qa(client: httpx.Client, url: str) -> int:
    hits = 0
    for question, expected in QUESTIONS:
        text = answer_of(ask(client, url, question, 32)).lower()
        hits += any(word in text for word in expected.split("|"))
    return hits


def passkey(client: httpx.Client, url: str, length: int, depth: float, seed: int) -> Passkey:
    """The key hidden at ``depth`` in ``length`` tokens of filler, asked back as a text
    completion (no chat template: the prompt ends where the key should follow)."""
    key = str(random.Random(seed).randint(10000, 99999))
    repeats = max(1, length // 24)  # the filler sentence is about 24 tokens
    before = int(repeats * depth)
    haystack = (
        FILLER * before
        + f"The pass key is {key}. Remember it. {key} is the pass key. "
        + FILLER * (repeats - before)
    )
    prompt = (
        "There is important information hidden inside a lot of irrelevant text. Find it and "
        f"memorize it.\n\n{haystack}\n\nWhat is the pass key? The pass key is"
    )
    body = {"model": "gpt-4", "prompt": prompt, "max_tokens": 8, "temperature": 0}
    started = time.perf_counter()
    response = client.post(f"{url}/v1/completions", json=body)
    seconds = time.perf_counter() - started
    data = response.json()
    if response.status_code != 200:
        return Passkey(length, depth, 0, False, round(seconds, 1), f"error: {data}"[:80])
    text = str(data["choices"][0]["text"])
    tokens = int(data["usage"]["prompt_tokens"])
    return Passkey(length, depth, tokens, key in text, round(seconds, 1), text.strip()[:40])


def one_stream(client: httpx.Client, url: str) -> tuple[float, float]:
    body = {
        "model": "gpt-4",
        "messages": [{"role": "user", "content": "Write a story about a lighthouse."}],
        "max_tokens": 96,
        "logit_bias": {"2": -100},  # no end of text: every run has 96 tokens
        "stream": True,
    }
    started = time.perf_counter()
    first = 0.0
    count = 0
    with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and '"content":"' in line:
                count += 1
                first = first or time.perf_counter() - started
    elapsed = time.perf_counter() - started
    return round((count - 1) / (elapsed - first), 1), round(first * 1000)


def best_stream(client: httpx.Client, url: str) -> tuple[float, float]:
    runs = [one_stream(client, url) for _ in range(3)]
    return max(r[0] for r in runs), min(r[1] for r in runs)


def fits(layout: str, length: int) -> bool:
    """Whether the layout's context holds a prompt of ``length`` (32768 unless it names one)."""
    context = 32768
    if "context:" in layout:
        context = int(layout.split("context:")[1].split(",")[0].strip(" }"))
    return length + 200 < context


def run_layout(args: argparse.Namespace, layout: str) -> LayoutFigures:
    with (
        interference_process(args.weights, layout) as (url, process),
        httpx.Client(timeout=1800) as client,
    ):
        figures = LayoutFigures(layout, qa(client, url), len(QUESTIONS))
        if args.after_long:
            figures.before_long = best_stream(client, url)
        for i, length in enumerate(args.lengths):
            if not fits(layout, length):
                continue
            depths = args.depths if length < args.one_depth_from else [0.5]
            for j, depth in enumerate(depths):
                result = passkey(client, url, length, depth, seed=i * 10 + j)
                figures.passkeys.append(result)
                print(f"  {layout} {asdict(result)}", flush=True)
        if args.after_long:
            figures.after_long = best_stream(client, url)
        figures.rss_mb = round(rss_mb(process.pid))
    return figures


def report(results: list[LayoutFigures], args: argparse.Namespace) -> None:
    print(
        f"\npasskey: hits of keys at depths {args.depths} (0.5 only from "
        f"{args.one_depth_from} tokens), and the longest prompt's seconds; "
        f"QA: {len(QUESTIONS)} questions, greedy"
    )
    header = f"{'layout':40} {'QA':>6} {'RSS MB':>7}  " + "  ".join(
        f"{n:>12}" for n in args.lengths
    )
    print(header)
    for figures in results:
        cells = []
        for length in args.lengths:
            runs = [p for p in figures.passkeys if p.length == length]
            hits = sum(p.found for p in runs)
            slowest = max((p.seconds for p in runs), default=0)
            cells.append(f"{hits}/{len(runs)} {slowest:>5.0f}s" if runs else "-")
        qa_cell = f"{figures.qa_hits}/{figures.qa_total}"
        print(
            f"{figures.layout:40} {qa_cell:>6} {figures.rss_mb:>7.0f}  "
            + "  ".join(f"{c:>12}" for c in cells)
        )
        if figures.before_long and figures.after_long:
            print(
                f"{'':40} one stream before/after the long prompts: "
                f"{figures.before_long[0]} -> {figures.after_long[0]} tok/s, first token "
                f"{figures.before_long[1]:.0f} -> {figures.after_long[1]:.0f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", action="append", help="YAML flow mapping (repeatable)")
    parser.add_argument("--lengths", default="2000,6000,12000,24000")
    parser.add_argument("--depths", default="0.1,0.5,0.9", help="where keys are hidden")
    parser.add_argument(
        "--one-depth-from", type=int, default=16000, help="from this length: depth 0.5 only"
    )
    parser.add_argument("--weights", default="q8_0")
    parser.add_argument("--after-long", action="store_true")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    args.lengths = [int(n) for n in args.lengths.split(",")]
    args.depths = [float(d) for d in args.depths.split(",")]
    results = []
    for layout in args.layout or DEFAULT_LAYOUTS:
        results.append(run_layout(args, layout))
    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
