"""Tune a model's sampling defaults by measurement.

Small instruct models such as SmolLM2-135M-Instruct tend to loop with llama.cpp's own sampling
defaults: they repeat a line or a stanza until the token cap or the context is full. This script
loads the model once, in-process, through ``interference.engine`` (no HTTP, no network), and runs
a small grid of candidate sampling settings against a few varied prompts, every candidate with
every prompt and every seed. The seed is sent in the request, so answers are reproducible up to
what continuous batching changes (between two runs about nine answers in ten come out
identical). Requests run concurrently, four at a time, so all of the engine's four slots are busy.

For each candidate it measures:

* **stop** -- the fraction of answers with ``finish_reason == "stop"``: the model ended the
  answer by itself before the ``--max-tokens`` cap;
* **looped** -- the fraction of answers that loop: some line or sentence of at least 20
  characters occurs 3 or more times, or the distinct word-trigram ratio is below 0.5;
* **distinct3** -- unique / total word trigrams of an answer, averaged over the answers (an
  answer shorter than three words counts as 1.0);
* **tokens** -- mean completion tokens per answer, and **wall** -- wall time of the candidate.

Candidates are ranked by stop rate, then by 1 - looped rate, then by distinct3; the first one
is the winner, the values to put in ``interference.engine.sampling`` for that model.

Run it with ``make bench-sampling`` (which runs ``python bench/sampling_defaults.py``; pass
options through ``ARGS=...``) or directly::

    .venv/bin/python bench/sampling_defaults.py                   # the real run (20 seeds)
    .venv/bin/python bench/sampling_defaults.py --json /tmp/s.json
    .venv/bin/python bench/sampling_defaults.py --quick           # smoke run, seconds

Options: ``--model`` (a known model name or a GGUF path; default smollm2-135m-instruct),
``--seeds`` (default 20; a tuning run needs at least 20), ``--max-tokens`` (the cap of every
request, default 400), ``--json PATH`` (also write the results as JSON) and ``--quick`` (2 seeds,
1 prompt, 2 candidates). With the defaults the run takes under ten minutes on two CPU cores.
Timings only mean something on an otherwise idle machine: the engine uses every core, and
anything else running beside it slows generation down a lot (the load average is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from interference.engine.catalog import resolve_model
from interference.engine.llama import EngineSettings, LlamaEngine
from interference.engine.sampling import TOP_K_FIRST
from interference.engine.weights import WEIGHT_FORMATS, prepare_weights
from interference.errors import InterferenceError

CONCURRENCY = 4  # the engine's slots
MIN_SEEDS = 20
LOOP_LINE_CHARS = 20  # a repeated line or sentence must be at least this long ...
LOOP_LINE_REPEATS = 3  # ... and occur this many times to count as a loop
LOOP_MIN_DISTINCT = 0.5  # an answer below this distinct-trigram ratio loops too

PROMPTS: tuple[str, ...] = (
    "write a poem about a tree",
    "In one or two sentences, explain why the sky is blue.",
    "Tell a three-sentence story about a lost dog finding its way home.",
    "How do I boil an egg? Give three short steps.",
)

Settings = dict[str, float | int | list[str]]


@dataclass(frozen=True)
class Candidate:
    name: str
    settings: Settings  # the sampling fields sent with every request; {} = the engine's own
    current: bool = False  # the model's defaults as they stand in interference.engine.sampling


#: The base of the variations: the values SmolLM2-135M-Instruct was first given (temperature
#: 0.3, top_p 0.9, repeat_penalty 1.15, DRY 0.8, with llama.cpp's top_k and min_p).
BASE: Settings = {
    "temperature": 0.3,
    "top_p": 0.9,
    "top_k": 40,
    "min_p": 0.05,
    "repeat_penalty": 1.15,
    "repeat_last_n": 64,
    "dry_multiplier": 0.8,
    "dry_base": 1.75,
    "dry_allowed_length": 2,
}


def make_candidates(current: Settings) -> list[Candidate]:
    """The grid, with the model's current defaults marked (or added when not on the grid).

    Five candidates keep the run under ten minutes on two cores. A pilot found BASE with
    min_p=0.1 and top_k=20 indistinguishable from BASE, so that variation is not in the grid.
    """
    grid = [
        Candidate("engine-defaults", {}),
        Candidate("t0.2 p0.9 rp1.1", {"temperature": 0.2, "top_p": 0.9, "repeat_penalty": 1.1}),
        Candidate("t0.3 rp1.15 dry0.8", BASE),
        Candidate("t0.3 rp1.15 dry0.8 rln256", {**BASE, "repeat_last_n": 256}),
        Candidate("t0.6 rp1.1 dry0.8", {**BASE, "temperature": 0.6, "repeat_penalty": 1.1}),
        Candidate(
            "t0.3 rp1.15 dry0.8 rln256 topk1",  # the same, top_k applied before the penalties
            {**BASE, "repeat_last_n": 256, "samplers": list(TOP_K_FIRST)},
        ),
    ]
    for index, candidate in enumerate(grid):
        if candidate.settings == current:
            grid[index] = Candidate(candidate.name, candidate.settings, current=True)
            return grid
    return [*grid[:2], Candidate("current", current, current=True), *grid[2:]]


@dataclass
class Sample:
    prompt: int
    seed: int
    finish_reason: str
    completion_tokens: int
    distinct3: float
    looped: bool


@dataclass
class Result:
    name: str
    settings: Settings
    current: bool
    stop_rate: float
    looped_rate: float
    distinct3: float
    mean_tokens: float
    wall_s: float
    errors: int
    samples: list[Sample] = field(default_factory=list)

    def rank_key(self) -> tuple[float, float, float]:
        return (self.stop_rate, 1.0 - self.looped_rate, self.distinct3)


_WORD = re.compile(r"[\w']+")
_SEGMENT = re.compile(r"(?<=[.!?])\s+|\n+")


def distinct_trigram_ratio(text: str) -> float:
    """Unique / total word trigrams; 1.0 when the text has fewer than three words."""
    words = _WORD.findall(text.lower())
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    if not trigrams:
        return 1.0
    return len(set(trigrams)) / len(trigrams)


def has_repeated_segment(text: str) -> bool:
    """Whether a line or sentence of >= 20 characters occurs 3 or more times."""
    counts: dict[str, int] = {}
    for raw in _SEGMENT.split(text):
        segment = " ".join(raw.lower().split()).strip(" -*#>\"'")
        if len(segment) < LOOP_LINE_CHARS:
            continue
        counts[segment] = counts.get(segment, 0) + 1
        if counts[segment] >= LOOP_LINE_REPEATS:
            return True
    return False


def score(prompt: int, seed: int, response: dict[str, Any]) -> Sample:
    choice = response["choices"][0]
    text = choice["message"].get("content") or ""
    distinct = distinct_trigram_ratio(text)
    return Sample(
        prompt=prompt,
        seed=seed,
        finish_reason=str(choice.get("finish_reason")),
        completion_tokens=int(response.get("usage", {}).get("completion_tokens", 0)),
        distinct3=distinct,
        looped=has_repeated_segment(text) or distinct < LOOP_MIN_DISTINCT,
    )


async def run_candidate(
    engine: LlamaEngine,
    candidate: Candidate,
    prompts: tuple[str, ...],
    seeds: int,
    max_tokens: int,
) -> Result:
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(prompt: int, seed: int) -> Sample | None:
        payload: dict[str, Any] = {
            "messages": [{"role": "user", "content": prompts[prompt]}],
            "max_tokens": max_tokens,
            "seed": seed,
            **candidate.settings,
        }
        async with semaphore:
            try:
                response = await engine.complete_chat(payload)
            except InterferenceError as exc:
                print(f"  {candidate.name} prompt {prompt} seed {seed}: {exc}", file=sys.stderr)
                return None
        return score(prompt, seed, response)

    started = time.perf_counter()
    jobs = [one(p, s) for p in range(len(prompts)) for s in range(seeds)]
    outcomes = await asyncio.gather(*jobs)
    wall = time.perf_counter() - started
    samples = [s for s in outcomes if s is not None]
    errors = len(outcomes) - len(samples)
    total = len(outcomes)  # an error counts as neither stopped nor distinct, and as looped
    return Result(
        name=candidate.name,
        settings=candidate.settings,
        current=candidate.current,
        stop_rate=sum(s.finish_reason == "stop" for s in samples) / total,
        looped_rate=(sum(s.looped for s in samples) + errors) / total,
        distinct3=sum(s.distinct3 for s in samples) / total,
        mean_tokens=sum(s.completion_tokens for s in samples) / max(1, len(samples)),
        wall_s=wall,
        errors=errors,
        samples=samples,
    )


def describe(settings: Settings) -> str:
    if not settings:
        return "(no sampling fields: the engine's own defaults)"
    return " ".join(f"{key}={value}" for key, value in settings.items())


def table(results: list[Result]) -> str:
    width = max(len("candidate"), *(len(r.name) for r in results))
    header = (
        f"{'#':>2}  {'candidate':<{width}} {'stop':>6} {'looped':>7} {'distinct3':>9} "
        f"{'tokens':>7} {'wall s':>7}"
    )
    lines = [header, "-" * len(header)]
    for rank, r in enumerate(results, 1):
        errors = f"  ({r.errors} errors)" if r.errors else ""
        lines.append(
            f"{rank:>2}{'*' if r.current else ' '} {r.name:<{width}} {r.stop_rate:>6.1%} "
            f"{r.looped_rate:>7.1%} {r.distinct3:>9.3f} {r.mean_tokens:>7.1f} "
            f"{r.wall_s:>7.1f}{errors}"
        )
    lines.append("")
    lines.append("* the model's current defaults (interference.engine.sampling)")
    lines.extend(f"{r.name:<{width}}  {describe(r.settings)}" for r in results)
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="known name or GGUF path")
    parser.add_argument("--seeds", type=int, default=MIN_SEEDS, help="seeds per prompt (>= 20)")
    parser.add_argument("--max-tokens", type=int, default=400, help="cap of every request")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, 1 prompt")
    parser.add_argument("--only", default="", help="comma-separated candidate names to run")
    parser.add_argument("--weights", default="q8_0", choices=WEIGHT_FORMATS)
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.max_tokens < 1:
        parser.error("--seeds and --max-tokens must be positive")
    return args


async def bench(args: argparse.Namespace) -> int:
    model = resolve_model(args.model)
    current = {
        k: list(v) if isinstance(v, tuple) else v for k, v in model.sampling.values().items()
    }
    candidates = make_candidates(current)
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        candidates = [
            c for c in candidates if c.name in wanted or (c.current and "current" in wanted)
        ]
    prompts = PROMPTS
    seeds: int = args.seeds
    if args.quick:
        quick = [candidates[0], next(c for c in candidates if c.current)]
        seeds, prompts, candidates = 2, PROMPTS[:1], quick
    elif seeds < MIN_SEEDS:
        print(f"warning: {seeds} seeds; a tuning run needs at least {MIN_SEEDS}", file=sys.stderr)

    runs = len(candidates) * len(prompts) * seeds
    print(
        f"model {model.id} ({model.path.name}, weights {args.weights}); "
        f"{len(candidates)} candidates x "
        f"{len(prompts)} prompts x {seeds} seeds = {runs} requests, max_tokens {args.max_tokens}, "
        f"{os.cpu_count()} CPU cores",
        flush=True,
    )
    started = time.perf_counter()
    path = prepare_weights(model.path, args.weights)
    engine = LlamaEngine(EngineSettings(path=path, parallel=CONCURRENCY, context=16384))
    results: list[Result] = []
    try:
        await engine.start()
        for candidate in candidates:
            result = await run_candidate(engine, candidate, prompts, seeds, args.max_tokens)
            results.append(result)
            print(
                f"  {result.name:<26} stop {result.stop_rate:.1%} looped {result.looped_rate:.1%}"
                f" distinct3 {result.distinct3:.3f} ({result.wall_s:.0f} s)",
                flush=True,
            )
    finally:
        engine.close()
    total = time.perf_counter() - started

    results.sort(key=Result.rank_key, reverse=True)
    winner = results[0]
    print()
    print(table(results))
    print()
    print(f"winner: {winner.name}: {describe(winner.settings)}")
    if winner.current:
        print("the winner is the model's current defaults")
    else:
        print("the winner differs from the model's current defaults: update them")
    load = os.getloadavg()[0]
    print(f"total time {total:.0f} s (1-minute load average at the end: {load:.1f})")

    if args.json is not None:
        report = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": model.id,
            "path": str(model.path),
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
            "seeds": seeds,
            "max_tokens": args.max_tokens,
            "prompts": list(prompts),
            "total_s": round(total, 1),
            "load_average_1m": round(load, 2),
            "winner": winner.name,
            "results": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(bench(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
